"""Smaller students: drop encoder layers (and optionally prune heads and FFN neurons) of a fine-tuned, merged
sequence classifier, then distill the student from that teacher.

    student = make_student(teacher, every=2)                  # 6 -> 3 layers (teacher layers 1, 3, 5)
    student, history = distill(student, teacher, batches_fn, epochs=8, lr=1e-4, temperature=2.0, alpha=0.9)

`build_student` does both with edgetune's task API (batches, held-out evaluation) and returns a `StudentReport`
with the teacher's figures beside the student's. Nothing here knows about stages or recipes: a stage wires it.

Modules, by concern:
  - layout.py: where a model's encoder layers are, and which of them a student keeps;
  - student.py: make_student (layers dropped, optionally pruned), count_parameters;
  - prune.py: structured pruning of attention heads and FFN neurons by weight-magnitude importance;
  - distillation.py: the losses and the distillation loop (distill, EpochStats);
  - augment.py: perturbed copies of the training texts for the teacher to label (augment_examples);
  - step.py: the whole step with a task (build_student, StudentReport).

Supported layouts (found through the generic module tree, `model.base_model`):
  - `encoder.layer`: BERT, RoBERTa, XLM-RoBERTa, ELECTRA, CamemBERT, DeBERTa(-v2), MPNet and other BERT-style
    encoders; FFN pruning: `intermediate.dense` / `output.dense`;
  - `transformer.layer`: DistilBERT; FFN pruning: `ffn.lin1` / `ffn.lin2`.
Anything else raises ValueError.
"""
