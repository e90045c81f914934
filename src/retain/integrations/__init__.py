"""retain inside training loops it does not own: ``retain.integrations.transformers`` plugs the
probes, the guard and the strategies into ``transformers.Trainer`` and TRL's ``SFTTrainer``."""
