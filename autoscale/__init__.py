"""tfsched's autoscaler core: VPA-exact histograms, estimators and recommenders.

Everything here is pure (no I/O, no clock); the cluster loop feeds usage in and
writes :meth:`autoscale.recommend.Recommendation.to_status` out.  See
:mod:`autoscale.histogram` (VPA histograms), :mod:`autoscale.bank` (batch
ingestion), :mod:`autoscale.usage`, :mod:`autoscale.estimators`,
:mod:`autoscale.vertical`, :mod:`autoscale.cron`, :mod:`autoscale.replicas`,
:mod:`autoscale.merge` and :mod:`autoscale.recommend`.
"""
