import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "lmjax-lm-eval.pth"  # registers the `lmjax` model with lm-eval (lmjax/lm_eval_plugin.py)


class BuildWithPth(build_py):
    """Also puts the .pth start-up hook at the top of site-packages (wheels and editable)."""

    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


setup(
    name="lmjax",
    version="0.1.0",
    description="Decoder-only Transformer language models in JAX/Flax, from a laptop CPU to a pod.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["lmjax", "lmjax.*"]),
    package_data={"lmjax.data": ["tinyshakespeare.txt", "tinyshakespeare.SOURCE.txt"],
                  "lmjax.eval_tasks": ["*.yaml", "README.md", "data/*.jsonl"]},
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.11,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "sentencepiece>=0.2,<0.3",
        "ml-collections>=1.0,<2",
        "grain>=0.2.12,<0.3",
        "numpy>=1.26,<3",
        "tensorboardX>=2.6,<3",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "safetensors>=0.4,<1",
        "scipy>=1.11,<2",  # L-BFGS-B for the scaling-law fits
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",  # setup.cfg runs the suite on up to 2 workers, a file each
            "torch==2.13.0",
            "transformers>=4.46,<6",
            "tokenizers>=0.20,<1",
            "wandb>=0.19,<1",
            "lm-eval>=0.4.13,<0.5",
            "accelerate>=1,<2",  # lm-eval's HF backend, the reference the parity tests compare to
            # lmjax-plan's tests compile for TPU topologies; libtpu is what the plan extra adds.
            "jax[tpu]>=0.7,<0.11",
        ],
        "eval": ["lm-eval>=0.4.13,<0.5"],
        "wandb": ["wandb>=0.19,<1"],
        "tpu": ["jax[tpu]>=0.7,<0.11"],
        # lmjax-plan on a machine without TPUs: libtpu compiles for slices that are not there
        # (jax[tpu] pins the libtpu that matches the installed jax).
        "plan": ["jax[tpu]>=0.7,<0.11"],
        "cuda": ["jax[cuda12]>=0.7,<0.11"],
    },
    cmdclass={"build_py": BuildWithPth},
    entry_points={
        "console_scripts": [
            "lmjax-train=lmjax.main:train_main",
            "lmjax-sample=lmjax.main:sample_main",
            "lmjax-prepare=lmjax.data.prepare:main",
            "lmjax-export=lmjax.main:export_main",
            "lmjax-eval=lmjax.infer.evaluate:main",
            "lmjax-sweep=lmjax.study.sweep:main",
            "lmjax-scaling=lmjax.study.scaling:main",
            "lmjax-plot=lmjax.study.plot:main",
            "lmjax-plan=lmjax.plan.main:main",
        ]
    },
)
