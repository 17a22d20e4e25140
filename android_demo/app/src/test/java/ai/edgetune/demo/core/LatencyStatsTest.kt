package ai.edgetune.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test

class LatencyStatsTest {

    private val samples = listOf(12.5, 3.25, 7.0, 9.75, 4.5, 30.0, 5.125, 6.0, 8.25, 11.0)

    @Test
    fun percentilesMatchNumpyLinearInterpolation() {
        // numpy.percentile(samples, [50, 90, 99]) with the default method
        val s = LatencyStats.of(samples)
        assertEquals(7.625, s.p50, 1e-12)
        assertEquals(14.249999999999993, s.p90, 1e-12)
        assertEquals(28.425000000000004, s.p99, 1e-12)
        assertEquals(9.7375, s.mean, 1e-12)
        assertEquals(3.25, s.min, 0.0)
        assertEquals(30.0, s.max, 0.0)
    }

    @Test
    fun trimmedMeanDropsFivePercentAtEachEnd() {
        // 41 samples: floor(41 * 0.05) = 2 dropped from each end, as scipy.stats.trim_mean(x, 0.05)
        val values = (1..40).map { it.toDouble() } + 1000.0
        val s = LatencyStats.of(values.shuffled(java.util.Random(7)))
        assertEquals(21.0, s.trimmedMean, 1e-12)
        assertEquals(21.0, s.p50, 1e-12)
        assertEquals(37.0, s.p90, 1e-12)
        assertEquals(616.0000000000014, s.p99, 1e-9)
    }

    @Test
    fun fewSamplesAreNotTrimmed() {
        val s = LatencyStats.of(samples)
        assertEquals(s.mean, s.trimmedMean, 1e-12)
    }

    @Test
    fun oneSampleIsEveryStatistic() {
        val s = LatencyStats.of(listOf(4.0))
        assertEquals(LatencyStats(4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0), s)
    }

    @Test
    fun percentileEndsAreTheExtremes() {
        val sorted = doubleArrayOf(1.0, 2.0, 10.0)
        assertEquals(1.0, LatencyStats.percentile(sorted, 0.0), 0.0)
        assertEquals(10.0, LatencyStats.percentile(sorted, 100.0), 0.0)
        assertEquals(6.0, LatencyStats.percentile(sorted, 75.0), 1e-12)
    }

    @Test
    fun noSamplesIsAnError() {
        assertThrows(IllegalArgumentException::class.java) { LatencyStats.of(emptyList()) }
    }
}
