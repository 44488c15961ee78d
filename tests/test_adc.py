"""The ADC model's compiled quantiser equals the plain NumPy statement of the model."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hal.adc import FLAG_CLIPPED, FLAG_LEAD_OFF, AdcModel


def reference_convert(adc: AdcModel, volts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model in vectorised NumPy: scale, round, lead-off for missing values, rail."""
    codes = np.rint(volts * (adc.max_code / adc.full_scale_v))
    flags = np.zeros(codes.shape, dtype=np.uint8)
    missing = ~np.isfinite(codes)
    flags[missing] = FLAG_LEAD_OFF
    codes[missing] = 0
    clipped = np.abs(codes) > adc.max_code
    flags[clipped] |= FLAG_CLIPPED
    return np.clip(codes, -adc.max_code, adc.max_code), flags


volts_values = st.one_of(
    st.floats(-0.3, 0.3, allow_nan=False),  # around the ±187.5 mV range
    st.floats(-1e-4, 1e-4, allow_nan=False),  # EEG-sized
    st.sampled_from([np.nan, np.inf, -np.inf, 0.1875, -0.1875, 1e300, -1e300]),
)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(0, 40)), elements=volts_values))
def test_convert_equals_the_numpy_model(volts: np.ndarray) -> None:
    adc = AdcModel()
    codes, flags = adc.convert(volts)
    ref_codes, ref_flags = reference_convert(adc, volts)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(flags, ref_flags)


def test_convert_rails_and_flags() -> None:
    adc = AdcModel()
    codes, flags = adc.convert(np.array([[0.0, 0.2, -0.2, np.nan, 1e-6]]))
    assert codes[0, 1] == adc.max_code and codes[0, 2] == -adc.max_code
    assert list(flags[0]) == [0, FLAG_CLIPPED, FLAG_CLIPPED, FLAG_LEAD_OFF, 0]
    assert codes[0, 4] == np.rint(1e-6 * adc.max_code / adc.full_scale_v)
