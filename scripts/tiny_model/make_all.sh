#!/usr/bin/env bash
# Full recipe of the bundled tiny model: KJV corpus -> SentencePiece tokenizer ->
# LlamaForCausalLM training (~10 min on one CPU core) -> reference held-out eval.
#
# Usage (from anywhere):  scripts/tiny_model/make_all.sh [--steps N]
#   extra arguments go to train_model.py. Writes data/kjv/ and data/tiny-llama/.
#   Long: run it as  nohup scripts/tiny_model/make_all.sh > tiny.log 2>&1 &
#
# Each step is also runnable on its own as .venv-fixtures/bin/python scripts/tiny_model/<step>.py
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
py="$(scripts/fixtures/venv.sh)"

"$py" scripts/tiny_model/make_corpus.py       # data/kjv/{eval,train}.jsonl, train_verses.txt
"$py" scripts/tiny_model/train_tokenizer.py   # data/tiny-llama/tokenizer.model
"$py" scripts/tiny_model/train_model.py "$@"  # data/tiny-llama/{config.json,model.safetensors,...}
"$py" scripts/tiny_model/reference_eval.py    # data/tiny-llama/reference_eval.json
du -sh data/tiny-llama data/kjv/eval.jsonl
