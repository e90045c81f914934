import torch
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer

from retain.integrations.transformers import RetainCallback, RetainStrategies, RetainTrainerMixin
from retain.models import load_model  # the built-in model; or AutoModelForCausalLM/AutoTokenizer

class RetainSFTTrainer(RetainTrainerMixin, SFTTrainer):  # adds the strategies' penalties to the loss
    pass

model, tok = load_model("tiny")
rows = load_dataset("json", data_files="my_domain.jsonl")["train"]  # text, prompt/completion or messages
kit = RetainStrategies([{"name": "ewc", "lam": 0.1}, {"name": "replay", "fraction": 0.25}], model, tok)
args = SFTConfig(output_dir="runs/sft-ckpt", max_steps=100, learning_rate=1e-3,
                 bf16=torch.cuda.is_available())  # mixed precision on a GPU
trainer = RetainSFTTrainer(model=kit.model, args=args, processing_class=tok, retain=kit,
                           train_dataset=kit.train_dataset(rows))  # tokenized, replay mixed in
trainer.add_callback(RetainCallback(tok, trainer=trainer, strategies=kit, every=20,
                                    guard=["safety.refusal_rate>=0.9"], out="runs/sft"))
trainer.train()  # then: retain report runs/sft
