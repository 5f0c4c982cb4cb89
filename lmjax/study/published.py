"""Published compute-optimal scaling results that a study's fits are printed and drawn beside."""

# Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models": Approach 3's fit
# (eq. 10) and Table 2's exponents of N_opt ∝ C^a and D_opt ∝ C^b.
HOFFMANN_PARAMETRIC = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
HOFFMANN_ISOFLOP = {"a": 0.49, "b": 0.51}  # Approach 2 (Table 2)
# The paper's headline: parameters and tokens scale equally, ~20 tokens per parameter.
EQUAL_SCALING = {"a": 0.50, "b": 0.50}
TOKENS_PER_PARAMETER = 20.0

# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", their refit of
# Approach 3 on the paper's own data (eq. 2 there).
BESIROGLU_PARAMETRIC = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478,
                        "beta": 0.3658}

PARAMETRIC_REFERENCES = {"Hoffmann et al. 2022": HOFFMANN_PARAMETRIC,
                         "Besiroglu et al. 2024": BESIROGLU_PARAMETRIC}


def exponents(coefs: dict) -> dict:
    """a and b that a parametric fit implies: N_opt ∝ C^(β/(α+β)), D_opt ∝ C^(α/(α+β))."""
    total = coefs["alpha"] + coefs["beta"]
    return {"a": coefs["beta"] / total, "b": coefs["alpha"] / total}
