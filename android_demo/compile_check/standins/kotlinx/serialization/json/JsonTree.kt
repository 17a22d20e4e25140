package kotlinx.serialization.json

// Stand-in for exactly the part of kotlinx-serialization-json 1.9.0 that the app and its tests use, with
// the same public signatures: JsonElement, JsonPrimitive (isString, content), JsonNull, JsonObject (a Map),
// JsonArray (a List), JsonPrimitive(Number?), jsonObject, jsonPrimitive, Json.parseToJsonElement,
// buildJsonObject with put (Boolean?, Number?, String?), putJsonObject and putJsonArray, and
// JsonArrayBuilder.add. Unlike the AndroidX stand-ins it works, because the JVM unit tests run through it.
// It behaves as kotlinx does where the app depends on it: unquoted values (numbers, true, false) keep their
// spelling in `content`, unquoted null is JsonNull, objects keep their key order, malformed input throws an
// IllegalArgumentException, and toString() prints compact JSON with the same escapes.
// Written for edgetune (not kotlinx.serialization's code); used only by android_demo/compile_check.sh.

sealed class JsonElement

sealed class JsonPrimitive : JsonElement() {
    abstract val isString: Boolean
    abstract val content: String

    override fun toString(): String = content
}

/** A string, number or boolean; [content] is its text without quotes. */
private class JsonLiteral(override val content: String, override val isString: Boolean) : JsonPrimitive() {
    override fun toString(): String = if (isString) quote(content) else content

    override fun equals(other: Any?): Boolean =
        other is JsonLiteral && other.isString == isString && other.content == content

    override fun hashCode(): Int = 31 * isString.hashCode() + content.hashCode()
}

object JsonNull : JsonPrimitive() {
    override val isString: Boolean get() = false
    override val content: String = "null"
}

class JsonObject internal constructor(private val content: Map<String, JsonElement>) : JsonElement(), Map<String, JsonElement> by content {
    override fun equals(other: Any?): Boolean = content == other
    override fun hashCode(): Int = content.hashCode()
    override fun toString(): String =
        content.entries.joinToString(",", "{", "}") { (key, value) -> quote(key) + ":" + value }
}

class JsonArray internal constructor(private val content: List<JsonElement>) : JsonElement(), List<JsonElement> by content {
    override fun equals(other: Any?): Boolean = content == other
    override fun hashCode(): Int = content.hashCode()
    override fun toString(): String = content.joinToString(",", "[", "]")
}

private fun JsonPrimitive(value: Boolean?): JsonPrimitive = if (value == null) JsonNull else JsonLiteral(value.toString(), false)

fun JsonPrimitive(value: Number?): JsonPrimitive = if (value == null) JsonNull else JsonLiteral(value.toString(), false)

private fun JsonPrimitive(value: String?): JsonPrimitive = if (value == null) JsonNull else JsonLiteral(value, true)

val JsonElement.jsonPrimitive: JsonPrimitive
    get() = this as? JsonPrimitive ?: throw IllegalArgumentException("Element ${this::class} is not a JsonPrimitive")

val JsonElement.jsonObject: JsonObject
    get() = this as? JsonObject ?: throw IllegalArgumentException("Element ${this::class} is not a JsonObject")

sealed class Json {
    /** Parses [string] as one JSON value; malformed input throws IllegalArgumentException. */
    fun parseToJsonElement(string: String): JsonElement = JsonReader(string).document()

    companion object Default : Json()
}

class JsonObjectBuilder @PublishedApi internal constructor() {
    private val content = LinkedHashMap<String, JsonElement>()

    internal fun put(key: String, element: JsonElement): JsonElement? = content.put(key, element)

    @PublishedApi
    internal fun build(): JsonObject = JsonObject(content)
}

class JsonArrayBuilder @PublishedApi internal constructor() {
    private val content = ArrayList<JsonElement>()

    fun add(element: JsonElement): Boolean = content.add(element)

    @PublishedApi
    internal fun build(): JsonArray = JsonArray(content)
}

inline fun buildJsonObject(builderAction: JsonObjectBuilder.() -> Unit): JsonObject {
    val builder = JsonObjectBuilder()
    builder.builderAction()
    return builder.build()
}

fun JsonObjectBuilder.put(key: String, value: Boolean?): JsonElement? = put(key, JsonPrimitive(value))

fun JsonObjectBuilder.put(key: String, value: Number?): JsonElement? = put(key, JsonPrimitive(value))

fun JsonObjectBuilder.put(key: String, value: String?): JsonElement? = put(key, JsonPrimitive(value))

fun JsonObjectBuilder.putJsonObject(key: String, builderAction: JsonObjectBuilder.() -> Unit): JsonElement? =
    put(key, buildJsonObject(builderAction))

fun JsonObjectBuilder.putJsonArray(key: String, builderAction: JsonArrayBuilder.() -> Unit): JsonElement? =
    put(key, JsonArrayBuilder().apply(builderAction).build())

/** [s] as a JSON string: quotes, backslashes and control characters escaped. */
private fun quote(s: String): String {
    val out = StringBuilder(s.length + 2).append('"')
    for (c in s) {
        when (c) {
            '"' -> out.append("\\\"")
            '\\' -> out.append("\\\\")
            '\n' -> out.append("\\n")
            '\r' -> out.append("\\r")
            '\t' -> out.append("\\t")
            '\b' -> out.append("\\b")
            '\u000c' -> out.append("\\f")
            else -> if (c < ' ') out.append(String.format("\\u%04x", c.code)) else out.append(c)
        }
    }
    return out.append('"').toString()
}

/** A recursive-descent reader of one JSON document. */
private class JsonReader(private val text: String) {
    private var pos = 0

    private fun fail(message: String): Nothing =
        throw IllegalArgumentException("Unexpected JSON token at offset $pos: $message")

    private fun skipSpace() {
        while (pos < text.length && text[pos].isWhitespace()) pos++
    }

    private fun peek(): Char? {
        skipSpace()
        return text.getOrNull(pos)
    }

    private fun expect(c: Char) {
        if (peek() != c) fail("expected '$c'")
        pos++
    }

    fun document(): JsonElement {
        val value = value()
        if (peek() != null) fail("expected the end of the input")
        return value
    }

    private fun value(): JsonElement = when (peek()) {
        null -> fail("expected a value, found the end of the input")
        '{' -> obj()
        '[' -> array()
        '"' -> JsonLiteral(string(), isString = true)
        ',', ':', '}', ']' -> fail("expected a value")
        else -> literal()
    }

    private fun obj(): JsonObject {
        expect('{')
        val content = LinkedHashMap<String, JsonElement>()
        if (peek() == '}') {
            pos++
            return JsonObject(content)
        }
        while (true) {
            if (peek() != '"') fail("expected a quoted key")
            val key = string()
            expect(':')
            content[key] = value()
            when (peek()) {
                ',' -> pos++
                '}' -> {
                    pos++
                    return JsonObject(content)
                }
                else -> fail("expected ',' or '}'")
            }
            if (peek() == '}') fail("trailing comma")
        }
    }

    private fun array(): JsonArray {
        expect('[')
        val content = ArrayList<JsonElement>()
        if (peek() == ']') {
            pos++
            return JsonArray(content)
        }
        while (true) {
            content.add(value())
            when (peek()) {
                ',' -> pos++
                ']' -> {
                    pos++
                    return JsonArray(content)
                }
                else -> fail("expected ',' or ']'")
            }
            if (peek() == ']') fail("trailing comma")
        }
    }

    /** An unquoted value (number, true, false, null), kept as written. */
    private fun literal(): JsonPrimitive {
        val start = pos
        while (pos < text.length && !text[pos].isWhitespace() && text[pos] !in ",:{}[]\"") pos++
        val token = text.substring(start, pos)
        return if (token == "null") JsonNull else JsonLiteral(token, isString = false)
    }

    private fun string(): String {
        expect('"')
        val out = StringBuilder()
        while (true) {
            if (pos >= text.length) fail("unterminated string")
            val c = text[pos++]
            when (c) {
                '"' -> return out.toString()
                '\\' -> {
                    if (pos >= text.length) fail("unterminated string")
                    when (val e = text[pos++]) {
                        '"', '\\', '/' -> out.append(e)
                        'n' -> out.append('\n')
                        'r' -> out.append('\r')
                        't' -> out.append('\t')
                        'b' -> out.append('\b')
                        'f' -> out.append('\u000c')
                        'u' -> {
                            val hex = text.substring(pos, minOf(pos + 4, text.length))
                            val code = hex.takeIf { it.length == 4 }?.toIntOrNull(16) ?: fail("bad \\u escape")
                            out.append(code.toChar())
                            pos += 4
                        }
                        else -> fail("bad escape \\$e")
                    }
                }
                else -> out.append(c)
            }
        }
    }
}
