import torch
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer

from retain.data import write_builtin_jsonl
from retain.integrations.transformers import RetainCallback, RetainStrategies, RetainTrainerMixin
from retain.models import load_model  # the built-in model; or AutoModelForCausalLM/AutoTokenizer

class RetainSFTTrainer(RetainTrainerMixin, SFTTrainer):  # adds the strategies' penalties to the loss
    pass

data = write_builtin_jsonl("builtin:legal", "legal.jsonl", n=500)  # or data = "my_domain.jsonl"
model, tok = load_model("tiny")
rows = load_dataset("json", data_files=str(data))["train"]  # text, prompt/completion or messages
kit = RetainStrategies([{"name": "ewc", "lam": 0.1}, {"name": "replay", "fraction": 0.25}], model, tok)
args = SFTConfig(output_dir="runs/sft-ckpt", max_steps=100, learning_rate=1e-3,
                 bf16=torch.cuda.is_available())  # mixed precision on a GPU
trainer = RetainSFTTrainer(model=kit.model, args=args, processing_class=tok, retain=kit,
                           train_dataset=kit.train_dataset(rows))  # 10% held out, replay mixed in
trainer.add_callback(RetainCallback(tok, trainer=trainer, strategies=kit, data=str(data), every=20,
                                    guard=["safety.refusal_rate>=0.9"], out="runs/sft"))
trainer.train()  # then: retain report runs/sft
