package ai.edgetune.demo.core

import java.util.Locale

/** Timing of one streamed reply: time to first token and decode speed with the first token excluded. */
data class GenerationStats(val promptTokens: Int, val newTokens: Int, val firstTokenMs: Double, val totalMs: Double) {

    /** Tokens per second after the first one, as the Python host benchmark reports decode speed; null below 2 tokens. */
    val decodeTokensPerSecond: Double?
        get() {
            val decodeMs = totalMs - firstTokenMs
            return if (newTokens < 2 || decodeMs <= 0.0) null else (newTokens - 1) * 1000.0 / decodeMs
        }

    fun describe(): String {
        val speed = decodeTokensPerSecond?.let { String.format(Locale.US, ", %.1f tokens/s", it) } ?: ""
        return String.format(Locale.US, "%d prompt tokens, %d new tokens, first token %.0f ms", promptTokens, newTokens, firstTokenMs) + speed
    }
}
