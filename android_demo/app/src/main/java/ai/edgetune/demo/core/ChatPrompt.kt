package ai.edgetune.demo.core

/**
 * Fills the chat prompt format of an LLM package: `edgetune package` renders the model's chat template with
 * the literal placeholders `{system}` and `{user}`, e.g.
 * `<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n`.
 */
object ChatPrompt {
    private const val SYSTEM = "{system}"
    private const val USER = "{user}"

    /**
     * Replaces each placeholder in one left-to-right pass, so a user message that itself contains
     * "{system}" or "{user}" is inserted verbatim and never expanded.
     */
    fun render(format: String, system: String, user: String): String {
        require(format.contains(USER)) { "the prompt format has no {user} placeholder" }
        val out = StringBuilder(format.length + system.length + user.length)
        var i = 0
        while (i < format.length) {
            when {
                format.startsWith(SYSTEM, i) -> { out.append(system); i += SYSTEM.length }
                format.startsWith(USER, i) -> { out.append(user); i += USER.length }
                else -> { out.append(format[i]); i++ }
            }
        }
        return out.toString()
    }
}
