package ai.edgetune.demo.core

import java.io.File
import java.io.InputStream
import java.security.MessageDigest

/** Lower-case hex SHA-256, the form `manifest.json` stores hashes in. */
object Sha256 {
    private const val BUFFER_BYTES = 1 shl 16

    /** Hashes [stream] to its end; the caller closes it. */
    fun hex(stream: InputStream): String {
        val digest = MessageDigest.getInstance("SHA-256")
        val buffer = ByteArray(BUFFER_BYTES)
        while (true) {
            val n = stream.read(buffer)
            if (n < 0) break
            digest.update(buffer, 0, n)
        }
        return toHex(digest.digest())
    }

    fun hex(file: File): String = file.inputStream().use { hex(it) }

    fun hex(bytes: ByteArray): String = toHex(MessageDigest.getInstance("SHA-256").digest(bytes))

    private fun toHex(bytes: ByteArray): String {
        val digits = "0123456789abcdef"
        val out = StringBuilder(bytes.size * 2)
        for (b in bytes) {
            val v = b.toInt() and 0xff
            out.append(digits[v ushr 4]).append(digits[v and 0x0f])
        }
        return out.toString()
    }
}
