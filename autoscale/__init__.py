"""tfsched's autoscaler core: VPA-exact histograms, estimators and recommenders.

Everything here is pure (no I/O, no clock); the cluster loop feeds usage in and
writes :meth:`autoscale.recommend.Recommendation.to_status` out.  See
:mod:`tfsched.autoscale.histogram` (VPA histograms), :mod:`tfsched.autoscale.bank` (batch
ingestion), :mod:`tfsched.autoscale.usage`, :mod:`tfsched.autoscale.estimators`,
:mod:`tfsched.autoscale.vertical`, :mod:`tfsched.autoscale.cron`, :mod:`tfsched.autoscale.replicas`,
:mod:`tfsched.autoscale.merge` and :mod:`tfsched.autoscale.recommend`.
"""
