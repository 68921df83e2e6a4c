"""``citybrain loadtest``: load a hub with real devices' readings at a scheduled rate.

* ``profiles`` -- rate schedules (constant, step, ramp, soak, burst) with exact pacing.
* ``devices`` -- which real devices of the city model play, and their frames and messages.
* ``generator`` -- publisher processes, pacing, and the merged ``LoadResult``.
* ``report`` -- latency histograms, loss and duplication, the JSON report and the plot.
"""
