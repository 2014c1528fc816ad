"""Framework-free statistics of a training window: what is packed, and what is shown.

- :mod:`~gradvitals.stats._table`: the sufficient statistics (sums, counts, masks),
  each declared once with its cross-rank reduction, and the packed :class:`Layout`.
- :mod:`~gradvitals.stats._signals`: the vital signs derived from them (dead fraction,
  saturation, gradient norm, update ratio, loss), with their tags and captions.
- :mod:`~gradvitals.stats._records`: the host-side records the detectors read.
"""

from gradvitals.stats._assemble import LayerInfo as LayerInfo
from gradvitals.stats._assemble import SiteInfo as SiteInfo
from gradvitals.stats._assemble import assemble_record as assemble_record
from gradvitals.stats._records import DIES_WHEN_NEVER_POSITIVE as DIES_WHEN_NEVER_POSITIVE
from gradvitals.stats._records import SATURATING as SATURATING
from gradvitals.stats._records import BatchStats as BatchStats
from gradvitals.stats._records import LayerStats as LayerStats
from gradvitals.stats._records import LossStats as LossStats
from gradvitals.stats._records import SiteStats as SiteStats
from gradvitals.stats._records import WindowRecord as WindowRecord
from gradvitals.stats._records import asymptotes as asymptotes
from gradvitals.stats._records import history_scalars as history_scalars
from gradvitals.stats._signals import SIGNALS as SIGNALS
from gradvitals.stats._signals import Signal as Signal
from gradvitals.stats._table import FIELDS as FIELDS
from gradvitals.stats._table import Field as Field
from gradvitals.stats._table import Layout as Layout
from gradvitals.stats._table import Reduce as Reduce
from gradvitals.stats._table import Scope as Scope
from gradvitals.stats._table import Unpacked as Unpacked
from gradvitals.stats._table import combine_rows as combine_rows
