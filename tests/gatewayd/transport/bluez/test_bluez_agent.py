"""The hub's BlueZ pairing agent (`gatewayd.transport.bluez.agent`) against the `org.bluez`
stand-in's AgentManager1, and its Agent1 answers as bluetoothd would ask for them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from dbus_fast import Message, MessageType

from gatewayd.transport.bluez.agent import AGENT_PATH, CAPABILITY, HubAgent, bluez_agent
from gatewayd.transport.bumble.link import in_process_link

from fakebluez import FakeBluez

pytestmark = [pytest.mark.usefixtures("system_bus"), pytest.mark.timeout(30)]

DEVICE = "/org/bluez/hci0/dev_F0_F1_F2_F3_F4_F5"


@pytest.fixture
async def bluez() -> AsyncIterator[FakeBluez]:
    async with in_process_link() as link, FakeBluez(link.central) as standin:
        yield standin


async def ask(standin: FakeBluez, member: str, signature: str, *body: object) -> Message:
    """What bluetoothd does: call the default agent."""
    assert standin.agents.default is not None
    owner, path = standin.agents.default
    reply = await standin.bus.call(
        Message(
            destination=owner,
            path=path,
            interface="org.bluez.Agent1",
            member=member,
            signature=signature,
            body=list(body),
        )
    )
    assert reply is not None
    return reply


async def test_registers_as_the_default_no_input_no_output_agent_and_leaves(
    bluez: FakeBluez,
) -> None:
    async with bluez_agent() as agent:
        assert isinstance(agent, HubAgent)
        owner, path = bluez.agents.default or ("", "")
        assert path == AGENT_PATH
        assert bluez.agents.agents[owner] == (AGENT_PATH, CAPABILITY)
    assert bluez.agents.agents == {}
    assert bluez.agents.default is None
    assert bluez.calls["UnregisterAgent"] == 1


async def test_consents_to_just_works_and_refuses_what_needs_a_person(bluez: FakeBluez) -> None:
    async with bluez_agent() as agent:
        assert agent is not None
        ok = await ask(bluez, "RequestAuthorization", "o", DEVICE)
        assert ok.message_type == MessageType.METHOD_RETURN
        ok = await ask(bluez, "RequestConfirmation", "ou", DEVICE, 123456)
        assert ok.message_type == MessageType.METHOD_RETURN
        assert agent.approved == [DEVICE, DEVICE]
        for member, signature, body in (
            ("RequestPasskey", "o", (DEVICE,)),
            ("RequestPinCode", "o", (DEVICE,)),
        ):
            refused = await ask(bluez, member, signature, *body)
            assert refused.message_type == MessageType.ERROR
            assert refused.error_name == "org.bluez.Error.Rejected"
        assert await bluez.agent_authorizes(DEVICE)


async def test_registers_again_when_bluetoothd_restarts(bluez: FakeBluez) -> None:
    async with bluez_agent():
        await bluez.stop()
        restarted = FakeBluez(bluez.host)
        async with restarted:
            await restarted.agents.has_default.wait()
            assert restarted.agents.default is not None
            assert restarted.agents.default[1] == AGENT_PATH


async def test_registers_when_bluetoothd_starts_after_the_daemon() -> None:
    async with bluez_agent() as agent, in_process_link() as link:
        assert agent is not None  # the bus is there, org.bluez is not (yet)
        async with FakeBluez(link.central) as late:
            await late.agents.has_default.wait()
            assert late.agents.default is not None
            assert late.agents.default[1] == AGENT_PATH
