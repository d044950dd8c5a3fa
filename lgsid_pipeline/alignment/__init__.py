"""Geographic alignment: list-wise reward model and the G-DPO trainer."""
