package ai.edgetune.demo.core

import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.io.InputStream
import java.util.UUID

/**
 * Writes that a reader never sees half done: write a temporary file in the same folder, flush it to disk,
 * then rename it over the target (rename(2) replaces the target atomically on one file system).
 */
object AtomicFiles {

    /** The temporary file [writeText] uses: `<name>.tmp`, e.g. result.json.tmp. */
    fun tmpFor(target: File): File = File(target.parentFile, target.name + ".tmp")

    fun writeText(target: File, text: String) {
        write(target, tmpFor(target)) { out -> out.write(text.toByteArray(Charsets.UTF_8)) }
    }

    /**
     * Copies [input] (read to its end, not closed) to [target]; [onBytes] gets each chunk's size. The
     * temporary name is unique, so two processes of the app copying the same file cannot mix their bytes.
     */
    fun copy(input: InputStream, target: File, onBytes: (Int) -> Unit = {}) {
        val tmp = File(target.parentFile, "${target.name}.${UUID.randomUUID()}.tmp")
        write(target, tmp) { out ->
            val buffer = ByteArray(1 shl 16)
            while (true) {
                val n = input.read(buffer)
                if (n < 0) break
                out.write(buffer, 0, n)
                onBytes(n)
            }
        }
    }

    private fun write(target: File, tmp: File, body: (FileOutputStream) -> Unit) {
        val dir = target.parentFile ?: throw IOException("$target has no parent folder")
        if (!dir.isDirectory && !dir.mkdirs() && !dir.isDirectory) throw IOException("cannot create folder $dir")
        try {
            FileOutputStream(tmp).use { out ->
                body(out)
                out.flush()
                out.fd.sync()
            }
            if (!tmp.renameTo(target)) throw IOException("cannot rename $tmp to $target")
        } catch (e: Exception) {
            tmp.delete()
            throw e
        }
    }
}
