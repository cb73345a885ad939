"""SPCT training: the rule reward, rejection fine-tuning data (`train rft`), SFT and rule-based GRPO (TRL)."""
