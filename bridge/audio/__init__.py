"""Audio for the media plane: pure, synchronous, no I/O.

``g711`` (μ-law tables), ``resample`` (low-delay streaming resampler and the offline
reference), ``transcode`` (per-leg ``Uplink`` / ``Downlink`` codecs), ``formats`` (the
model's rate, defined once), ``wav`` (mono 16-bit WAV files).
"""
