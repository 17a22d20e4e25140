package ai.edgetune.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test

class PeakRssTest {

    @Test
    fun readsVmHwmInMebibytes() {
        val status = "Name:\tai.edgetune.demo\nVmPeak:\t 5000000 kB\nVmHWM:\t  153600 kB\nVmRSS:\t  100000 kB\n"
        assertEquals(150.0, PeakRss.parseVmHwmMb(status)!!, 1e-12)
    }

    @Test
    fun missingLineIsNull() {
        assertNull(PeakRss.parseVmHwmMb("Name:\tx\nVmRSS:\t 1 kB\n"))
    }

    @Test
    fun thisJvmHasAPeak() {
        val procStatus = java.io.File("/proc/self/status")
        if (procStatus.isFile) assertTrue((PeakRss.currentMb(procStatus) ?: 0.0) > 0.0)
    }
}
