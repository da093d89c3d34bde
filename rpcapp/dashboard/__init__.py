"""Layer 3: the staff dashboard: what is slow, what is failing, who is serving."""
