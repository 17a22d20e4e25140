package ai.edgetune.demo.core

import java.io.File

/** Peak resident set size of this process: VmHWM from /proc/self/status, as the Python host benchmark reads it. */
object PeakRss {

    /** VmHWM in MiB from the text of a /proc/<pid>/status file, or null when the line is absent. */
    fun parseVmHwmMb(status: String): Double? {
        val line = status.lineSequence().firstOrNull { it.startsWith("VmHWM:") } ?: return null
        val parts = line.substringAfter(':').trim().split(Regex("\\s+"))
        val kib = parts.firstOrNull()?.toLongOrNull() ?: return null
        val unit = parts.getOrNull(1)?.lowercase() ?: "kb"
        require(unit == "kb") { "unexpected VmHWM unit: $line" }
        return kib / 1024.0
    }

    fun currentMb(statusFile: File = File("/proc/self/status")): Double? =
        try {
            parseVmHwmMb(statusFile.readText())
        } catch (e: java.io.IOException) {
            null
        }
}
