package ai.edgetune.demo.core

/** Package files shaped like the ones `edgetune package` writes. */
object Fixtures {
    const val MODEL_SHA = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
    const val ORT_SHA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

    fun classifierManifest(modelSha: String = MODEL_SHA, ortModel: String = """{"file": "model.ort", "sha256": "$ORT_SHA", "size_bytes": 10, "precision": "int8", "files": ["model.ort"]}""") = """
        {
         "schema_version": 1,
         "task": "classification",
         "recipe": "intent-minilm",
         "model": {"file": "model.onnx", "sha256": "$modelSha", "size_bytes": 23000000, "precision": "int8", "files": ["model.onnx"]},
         "ort_model": $ortModel,
         "inputs": [{"name": "text", "dtype": "string", "shape": [1]}],
         "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 3]}],
         "tokenizer": {"kind": "embedded", "op": "BertTokenizer", "library": "onnxruntime-extensions", "max_length": 64},
         "labels": ["lights_on", "lights_off", "music_play"],
         "golden": {"file": "golden.json", "count": 2},
         "versions": {"edgetune": "0.1.0", "onnxruntime": "1.32.0", "onnxruntime_extensions": "0.15.2", "opset": 17},
         "source": {"quantized_sha256": "$modelSha", "precision": "int8"}
        }
    """.trimIndent()

    const val CHAT_MANIFEST = """
        {
         "schema_version": 1,
         "task": "causal-lm",
         "recipe": "home-assistant-smollm2",
         "model": {"file": "model.onnx", "sha256": "$MODEL_SHA", "size_bytes": 97000000, "precision": "int4",
                   "files": ["genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"]},
         "ort_model": null,
         "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [1, -1]}],
         "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, -1, -1]}],
         "tokenizer": {"kind": "onnxruntime-genai", "file": "tokenizer.json"},
         "chat": {"system_prompt": "You control a smart home.",
                  "prompt_format": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
                  "max_new_tokens": 64},
         "labels": [],
         "golden": {"file": "golden.json", "count": 1},
         "versions": {"edgetune": "0.1.0", "onnxruntime": "1.32.0", "onnxruntime_extensions": "0.15.2"},
         "source": {"quantized_sha256": "$MODEL_SHA", "precision": "int4"}
        }
    """

    const val GOLDEN = """
        {"max_abs_diff": 0.5, "min_cosine": 0.99,
         "cases": [
          {"text": "turn on the kitchen lights", "pytorch_logits": [3.0, -2.0, 0.25], "pytorch_label": "lights_on", "check_label": true},
          {"text": "lights off or music?", "pytorch_logits": [0.1, 0.2, 0.19], "pytorch_label": "lights_off", "check_label": false}
         ]}
    """

    const val CHAT_GOLDEN = """{"cases": [{"prompt": "dim the kitchen lights to 30", "pytorch_text": "{\"action\": \"dim\"}"}]}"""
}
