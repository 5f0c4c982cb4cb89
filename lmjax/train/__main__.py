"""`python -m lmjax.train`: the same command as lmjax-train."""
from lmjax.main import train_main

train_main()
