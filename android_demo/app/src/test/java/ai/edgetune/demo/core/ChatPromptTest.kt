package ai.edgetune.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test

class ChatPromptTest {

    private val chatMl = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"

    @Test
    fun fillsSystemAndUser() {
        assertEquals(
            "<|im_start|>system\nYou control a smart home.<|im_end|>\n<|im_start|>user\ndim the lights<|im_end|>\n" +
                "<|im_start|>assistant\n",
            ChatPrompt.render(chatMl, "You control a smart home.", "dim the lights"),
        )
    }

    @Test
    fun placeholdersInsideTheMessageStayLiteral() {
        assertEquals(
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nsay {system} and {user}<|im_end|>\n<|im_start|>assistant\n",
            ChatPrompt.render(chatMl, "S", "say {system} and {user}"),
        )
    }

    @Test
    fun formatWithoutSystemPrompt() {
        assertEquals("<u>hi</u>", ChatPrompt.render("<u>{user}</u>", "ignored", "hi"))
    }

    @Test
    fun bracesOfTheTemplateAreKept() {
        assertEquals("{\"a\": 1} x", ChatPrompt.render("{\"a\": 1} {user}", "", "x"))
    }

    @Test
    fun formatWithoutUserIsAnError() {
        assertThrows(IllegalArgumentException::class.java) { ChatPrompt.render("{system}", "s", "u") }
    }
}
