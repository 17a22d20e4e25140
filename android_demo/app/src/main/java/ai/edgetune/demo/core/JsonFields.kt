package ai.edgetune.demo.core

import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.JsonPrimitive

/** A JSON document that does not have the shape the app expects; the message names the file and field. */
class JsonFormatException(message: String) : Exception(message)

/**
 * Typed, path-aware reads from a kotlinx.serialization JSON tree. Every failure names the source file and
 * the field ("manifest.json: model.sha256 is missing"), so a bad package explains itself on screen.
 */
internal class JsonFields(private val obj: JsonObject, private val source: String, private val path: String) {

    private fun where(key: String) = if (path.isEmpty()) key else "$path.$key"

    private fun fail(key: String, problem: String): Nothing = throw JsonFormatException("$source: ${where(key)} $problem")

    private fun present(key: String): JsonElement? = obj[key]?.takeUnless { it is JsonNull }

    private fun required(key: String): JsonElement = present(key) ?: fail(key, "is missing")

    private fun primitive(key: String, element: JsonElement): JsonPrimitive =
        element as? JsonPrimitive ?: fail(key, "must be a single value, not $element")

    fun has(key: String): Boolean = present(key) != null

    fun string(key: String): String = optString(key) ?: fail(key, "is missing")

    fun optString(key: String): String? {
        val element = present(key) ?: return null
        val p = primitive(key, element)
        if (!p.isString) fail(key, "must be a string, not ${p.content}")
        return p.content
    }

    fun int(key: String): Int = optInt(key) ?: fail(key, "is missing")

    fun optInt(key: String): Int? {
        val element = present(key) ?: return null
        return primitive(key, element).content.toIntOrNull() ?: fail(key, "must be an integer, not $element")
    }

    fun long(key: String): Long = optLong(key) ?: fail(key, "is missing")

    fun optLong(key: String): Long? {
        val element = present(key) ?: return null
        return primitive(key, element).content.toLongOrNull() ?: fail(key, "must be an integer, not $element")
    }

    fun double(key: String): Double {
        val p = primitive(key, required(key))
        if (p.isString) fail(key, "must be a number, not \"${p.content}\"")
        val value = p.content.toDoubleOrNull() ?: fail(key, "must be a number, not ${p.content}")
        if (!value.isFinite()) fail(key, "must be a finite number, not ${p.content}")
        return value
    }

    fun boolean(key: String, default: Boolean): Boolean {
        val element = present(key) ?: return default
        return when (primitive(key, element).content) {
            "true" -> true
            "false" -> false
            else -> fail(key, "must be true or false, not $element")
        }
    }

    fun obj(key: String): JsonFields = optObj(key) ?: fail(key, "is missing")

    fun optObj(key: String): JsonFields? {
        val element = present(key) ?: return null
        val o = element as? JsonObject ?: fail(key, "must be an object")
        return JsonFields(o, source, where(key))
    }

    fun array(key: String): JsonArray = optArray(key) ?: fail(key, "is missing")

    fun optArray(key: String): JsonArray? {
        val element = present(key) ?: return null
        return element as? JsonArray ?: fail(key, "must be a list")
    }

    fun objects(key: String): List<JsonFields> = array(key).mapIndexed { i, e ->
        val o = e as? JsonObject ?: fail("$key[$i]", "must be an object")
        JsonFields(o, source, where("$key[$i]"))
    }

    fun strings(key: String): List<String> = optStrings(key) ?: fail(key, "is missing")

    fun optStrings(key: String): List<String>? = optArray(key)?.mapIndexed { i, e ->
        val p = e as? JsonPrimitive
        if (p == null || !p.isString) fail("$key[$i]", "must be a string, not $e")
        p.content
    }

    fun doubles(key: String): List<Double> = array(key).mapIndexed { i, e ->
        val p = e as? JsonPrimitive
        val value = if (p == null || p.isString) null else p.content.toDoubleOrNull()
        if (value == null || !value.isFinite()) fail("$key[$i]", "must be a finite number, not $e")
        value
    }

    fun longs(key: String): List<Long> = array(key).mapIndexed { i, e ->
        val p = e as? JsonPrimitive
        (if (p == null || p.isString) null else p.content.toLongOrNull()) ?: fail("$key[$i]", "must be an integer, not $e")
    }

    /** Every entry of an object whose values are single values, as text (numbers keep their JSON spelling). */
    fun scalars(key: String): Map<String, String> {
        val o = optObj(key) ?: return emptyMap()
        return o.obj.entries.filter { it.value is JsonPrimitive && it.value !is JsonNull }
            .associate { (k, v) -> k to (v as JsonPrimitive).content }
    }

    companion object {
        /** Parses [text] as a JSON object; [source] names the file in error messages. */
        fun parse(text: String, source: String): JsonFields {
            val element = try {
                Json.parseToJsonElement(text)
            } catch (e: Exception) {
                throw JsonFormatException("$source: not valid JSON (${e.message?.lineSequence()?.firstOrNull() ?: e})")
            }
            val obj = element as? JsonObject ?: throw JsonFormatException("$source: must hold a JSON object")
            return JsonFields(obj, source, "")
        }
    }
}
