"""What the emulators of every driver family share, so that no family borrows another's package.

- `physiology`: the simulated person, a deterministic glucose trace (meals, insulin, the dawn
  phenomenon) sampled the way a sensor stores it; the CGMS, Dexcom G6 and receiver emulators
  and the `simulator` driver read their values from it.
- `clock`: the simulated clock (integer microseconds, real time mapped to simulated time,
  optionally faster), shared by the `simulator` driver and the Dexcom G6 emulator.

Pure helpers: no radio, no daemon. A driver family imports these and its own package only (an
import rule in ``pyproject.toml``).
"""
