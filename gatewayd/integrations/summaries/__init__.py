"""Rolling glucose summaries (24 h and 14 days): time in ranges, mean, SD, CV, GMI, coverage.

`metrics` computes them (pure), `payload` shapes the JSON, `service` publishes it retained on
`<root>/<hub>/<device>/summary`, and `report` is `gatewayd report`.
"""

from __future__ import annotations

from gatewayd.integrations.summaries.options import SummaryOptions, parse
from gatewayd.services import Service, ServiceContext, ServiceSpec


def _create(options: SummaryOptions, context: ServiceContext) -> Service:
    from gatewayd.integrations.summaries.service import SummaryService

    return SummaryService(options, context)


SPEC: ServiceSpec[SummaryOptions] = ServiceSpec("summaries", parse, _create)
