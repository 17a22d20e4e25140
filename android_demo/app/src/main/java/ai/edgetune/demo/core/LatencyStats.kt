package ai.edgetune.demo.core

import kotlin.math.floor

/** Summary of timed runs in milliseconds, computed the way edgetune's Python host benchmark does. */
data class LatencyStats(
    val p50: Double,
    val p90: Double,
    val p99: Double,
    val mean: Double,
    val trimmedMean: Double,
    val min: Double,
    val max: Double,
) {
    companion object {
        /** Fraction of samples dropped from each end for [trimmedMean]. */
        const val TRIM_FRACTION = 0.05

        fun of(samplesMs: List<Double>): LatencyStats {
            require(samplesMs.isNotEmpty()) { "no samples" }
            require(samplesMs.all { it.isFinite() }) { "samples must be finite" }
            val sorted = samplesMs.sorted().toDoubleArray()
            return LatencyStats(
                p50 = percentile(sorted, 50.0),
                p90 = percentile(sorted, 90.0),
                p99 = percentile(sorted, 99.0),
                mean = sorted.average(),
                trimmedMean = trimmedMean(sorted, TRIM_FRACTION),
                min = sorted.first(),
                max = sorted.last(),
            )
        }

        /**
         * The [q]-th percentile (0..100) of ascending [sorted] values by linear interpolation between the two
         * nearest ranks: numpy.percentile's default method ("linear"), so device and host numbers agree.
         */
        fun percentile(sorted: DoubleArray, q: Double): Double {
            require(sorted.isNotEmpty()) { "no samples" }
            require(q in 0.0..100.0) { "percentile must be in 0..100, not $q" }
            val rank = q / 100.0 * (sorted.size - 1)
            val lo = floor(rank).toInt()
            val hi = minOf(lo + 1, sorted.size - 1)
            val t = rank - lo
            val a = sorted[lo]
            val b = sorted[hi]
            // numpy's lerp: exact at both ends, from whichever end is closer.
            return if (t >= 0.5) b - (b - a) * (1.0 - t) else a + (b - a) * t
        }

        /**
         * Mean after dropping floor(n * [fraction]) samples from each end of the ascending [sorted] values,
         * as scipy.stats.trim_mean(x, fraction). With fewer than 20 samples at 5% nothing is dropped.
         */
        fun trimmedMean(sorted: DoubleArray, fraction: Double): Double {
            require(sorted.isNotEmpty()) { "no samples" }
            require(fraction >= 0.0 && fraction < 0.5) { "trim fraction must be in [0, 0.5), not $fraction" }
            val k = floor(sorted.size * fraction).toInt()
            var sum = 0.0
            for (i in k until sorted.size - k) sum += sorted[i]
            return sum / (sorted.size - 2 * k)
        }
    }
}
