#!/usr/bin/env bash
# The evaluation figures of docs/evaluation.md on the development set: `make eval`.  Every command here is the
# one docs/evaluation.md shows next to its figures.  DATA defaults to ../shared/data; results go to eval/ (JSON + PNG).
set -euo pipefail
DATA=${DATA:-../shared/data}
P=$DATA/prompts
O=$DATA/outputs
OUT=${OUT:-eval}
G=.venv/bin/guardrail
mkdir -p "$OUT"
# prompt screening: each attack file against all benign prompts not used to fit (plain harmful and human-written
# jailbreaks reported, never mixed in)
$G eval prompts --data $P/attacks_gcg.jsonl $P/benign.jsonl $P/harmful_plain.jsonl $P/jailbreaks_humanwritten.jsonl \
  --report-labels harmful_plain,jailbreak --plots "$OUT/gcg" --json > "$OUT/prompts_gcg.json"
$G eval prompts --data $P/attacks_random_search.jsonl $P/benign.jsonl \
  --group-field suffix_kind --plots "$OUT/random_search" --json > "$OUT/prompts_random_search.json"
# prompt screening under shift: leave one source of the broad benign corpus (data/prompts) out at a time, for the
# shipped recipe, the previous one and ablations (docs/prompt-screening.md; tables: scripts/shift_table.py)
.venv/bin/python scripts/prompt_shift.py --data "$DATA" --out "$OUT/shift/results.json"
# output side (samples: scoring every output is ~3 M tokens)
$G eval outputs --data $O/degenerate_candidates.jsonl $O/reference_outputs.jsonl --context-field instruction \
  --positive-labels degenerate_candidate_unverified --negative-labels reference --limit 400 \
  --plots "$OUT/degenerate" --json > "$OUT/outputs_degenerate.json"
$G eval outputs --data $O/halueval_general.jsonl --text-field chatgpt_response --context-field user_query \
  --label-field hallucination --positive-labels yes --negative-labels no --limit 400 \
  --plots "$OUT/halueval" --json > "$OUT/outputs_halueval.json"
# the Guard on the real embedded model: whole-stream early abort on held-back prompts (docs/proxy.md; the
# generations are stored, scripts/stream_generations.py makes them all at once) and the regenerate -> reject
# ladder over 240 requests under the default policy (docs/guard.md)
CHAT="data/prompts/alpacaeval.jsonl data/prompts/alpaca_inputs.jsonl data/prompts/self_instruct.jsonl"
CHAT="$CHAT data/prompts/certified_safe.jsonl data/prompts/banking77.jsonl data/prompts/sgd_customer.jsonl"
mkdir -p "$OUT/stream"
for A in 0.01 0.05; do
  $G eval stream $(printf -- '--data %s ' $CHAT) --split test --temperatures 0,0.7 --limit 300 --max-tokens 80 \
    --alpha $A --json > "$OUT/stream/normal_$A.json"
  $G eval stream $(printf -- '--data %s ' $CHAT) --split test --temperatures 1.8 --limit 60 --max-tokens 80 \
    --alpha $A --json > "$OUT/stream/salad_$A.json"
done
# how well the loop rule separates those generations (docs/proxy.md#streaming: why loops are cut less)
.venv/bin/python scripts/loop_label_check.py --json > "$OUT/stream/loop_label.json"
.venv/bin/python scripts/ladder_eval.py --out "$OUT/ladder.json"
# the drift monitor: each domain baseline's held-back units, then another domain's (docs/guard.md#drift)
.venv/bin/python scripts/drift_eval.py --data "$DATA" --out "$OUT/drift.json"
# calibration per domain (held-back documents)
$G eval calibration --data $DATA/domains/*.jsonl --limit 300 --plots "$OUT/calibration" --json > "$OUT/calibration.json"
echo "wrote $OUT/"
