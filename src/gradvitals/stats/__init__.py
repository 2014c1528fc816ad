"""Framework-free sufficient statistics of a training window (sums, counts, masks)."""

from gradvitals.stats._records import DIES_WHEN_NEVER_POSITIVE as DIES_WHEN_NEVER_POSITIVE
from gradvitals.stats._records import LAYER_REDUCTIONS as LAYER_REDUCTIONS
from gradvitals.stats._records import LOSS_REDUCTIONS as LOSS_REDUCTIONS
from gradvitals.stats._records import SATURATING as SATURATING
from gradvitals.stats._records import SITE_REDUCTIONS as SITE_REDUCTIONS
from gradvitals.stats._records import LayerStats as LayerStats
from gradvitals.stats._records import LossStats as LossStats
from gradvitals.stats._records import SiteStats as SiteStats
from gradvitals.stats._records import WindowRecord as WindowRecord
from gradvitals.stats._records import history_scalars as history_scalars
