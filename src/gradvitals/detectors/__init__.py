"""One module per failure mode; each detector is a pure state machine over window records."""

from gradvitals.detectors._base import Detector as Detector
from gradvitals.detectors._base import EdgeTrigger as EdgeTrigger
from gradvitals.detectors._cascade import nest as nest
from gradvitals.detectors._diverged import DivergedPlateauDetector as DivergedPlateauDetector
from gradvitals.detectors._dying_relu import DyingReluDetector as DyingReluDetector
from gradvitals.detectors._exploding import ExplodingGradientDetector as ExplodingGradientDetector
from gradvitals.detectors._exploding import suggest_clip_norm as suggest_clip_norm
from gradvitals.detectors._nonfinite import NonfiniteDetector as NonfiniteDetector
from gradvitals.detectors._nonfinite import has_nonfinite as has_nonfinite
from gradvitals.detectors._output_activation import (
    OutputActivationDetector as OutputActivationDetector,
)
from gradvitals.detectors._saturation import SaturationDetector as SaturationDetector
from gradvitals.detectors._stalled import StalledDetector as StalledDetector
from gradvitals.detectors._thresholds import Thresholds as Thresholds
from gradvitals.detectors._vanishing import VanishingGradientDetector as VanishingGradientDetector
