package ai.edgetune.demo.core

/** How an ONNX Runtime session is created: intra-op threads and whether the XNNPACK execution provider is on. */
data class SessionSettings(val threads: Int = DEFAULT_THREADS, val xnnpack: Boolean = false) {
    init {
        require(threads >= 1) { "threads must be at least 1, not $threads" }
    }

    fun describe(): String = "$threads thread${if (threads == 1) "" else "s"}, XNNPACK ${if (xnnpack) "on" else "off"}"

    companion object {
        const val DEFAULT_THREADS = 2

        /** The thread counts the main screen offers. */
        val THREAD_CHOICES = listOf(1, 2, 4)
    }
}
