#!/usr/bin/env bash
# Stop a fine-tune the moment it starts scraping off refusals, and keep the last good checkpoint.
.venv/bin/retain run --lr 3e-3 --steps 100 --batch-size 8 --seq-len 128 --out runs/example-guard \
  --guard 'safety.refusal_rate>=0.9' --guard 'max_forgetting=0.1' --guard-every 10 --overwrite
