"""Pure, vectorised loss maths for knowledge distillation.

Every function here is stateless torch code with no skorch in sight: it takes
logits (or scores) and returns tensors. There is one function per formula, and
its docstring names the paper and equation it implements. Per-sample functions
return a tensor of shape ``(batch,)`` so that callers choose the reduction.

Notation: ``z`` logits, ``T`` temperature, ``p = softmax(z / T)``, ``t`` the
target class, superscripts T / S for teacher / student.

Masking never uses a large negative constant (the ``-1000`` trick of the
reference implementations overflows in half precision): masked entries are
``-inf`` where only a maximum reads them, and are selected away with
``torch.where`` before any product, so neither the values nor the gradients
see ``inf - inf``.

No function reads a tensor's value back to the host (no ``.item()``,
``bool(tensor)``, data-dependent shapes): the forward and backward passes can
be captured in a CUDA graph. Python branches depend only on shapes and
hyper-parameters. ``tests/test_losses_functional.py`` checks this by running
every loss on ``device="meta"`` tensors, which have no data to read.

The package is split by method; every public name is re-exported here, so
``from skd.losses import functional as Fn; Fn.<name>`` reaches all of them.
"""

from skd.losses.functional.basics import (
    UNLABELLED,
    check_choice,
    check_temperature,
    class_indices,
    labelled_cross_entropy,
    labelled_mean,
    soften,
    standardize_logits,
    target_mask,
    target_or_teacher_top,
)
from skd.losses.functional.correlation import (
    CONVENTIONS,
    RELEASED_EPS,
    abs_cosine_distance,
    correlation_distance,
    dist_terms,
    pearson_distance,
    r2kd_value_terms,
    relation_distances,
)
from skd.losses.functional.fused_kl import kd_divergence, kd_divergence_mean
from skd.losses.functional.fused_relation import pearson_relations, row_pearson_distance
from skd.losses.functional.rank import hard_rank, soft_rank, spearman_distance
from skd.losses.functional.split import (
    CAKDTerms,
    DKDTerms,
    SplitKL,
    SplitKLMeans,
    cakd_terms,
    dkd_terms,
    split_kl,
    split_kl_means,
    strong_class_mask,
)
from skd.losses.functional.teacher_free import (
    tempered_log_distribution,
    tfkd_reg_distribution,
    tfkd_reg_kl,
    tfkd_reg_log_distribution,
    tfkd_reg_released,
)

__all__ = [
    "CONVENTIONS",
    "RELEASED_EPS",
    "UNLABELLED",
    "CAKDTerms",
    "DKDTerms",
    "SplitKL",
    "SplitKLMeans",
    "abs_cosine_distance",
    "cakd_terms",
    "check_choice",
    "check_temperature",
    "class_indices",
    "correlation_distance",
    "dist_terms",
    "dkd_terms",
    "hard_rank",
    "kd_divergence",
    "kd_divergence_mean",
    "labelled_cross_entropy",
    "labelled_mean",
    "pearson_distance",
    "pearson_relations",
    "r2kd_value_terms",
    "relation_distances",
    "row_pearson_distance",
    "soft_rank",
    "soften",
    "standardize_logits",
    "spearman_distance",
    "split_kl",
    "split_kl_means",
    "strong_class_mask",
    "target_mask",
    "target_or_teacher_top",
    "tempered_log_distribution",
    "tfkd_reg_distribution",
    "tfkd_reg_kl",
    "tfkd_reg_log_distribution",
    "tfkd_reg_released",
]

# -- methods of issue 21 (logit standardization, TTM/WTTM, NKD, CTKD, compressed book, related work) --
from skd.losses.functional.compressed import TopKBook, compress_teacher, topk_kd_divergence  # noqa: E402
from skd.losses.functional.curriculum import (  # noqa: E402
    GlobalTemperature,
    GradientReversal,
    InstanceTemperature,
    curriculum_lambda,
    gradient_reversal,
    kd_divergence_per_sample_temperature,
)
from skd.losses.functional.related import (  # noqa: E402
    CONSISTENCY_KINDS,
    adaptive_smoothing_alpha,
    confidence_aware_weights,
    consistency_divergence,
    corrected_teacher_log_probs,
    extracted_teacher_logits,
    extractive_teacher_log_probs,
    self_knowledge_smoothed_ce,
    teacher_quality,
    teacher_quality_weights,
    weighted_teacher_log_probs,
)
from skd.losses.functional.transformed import (  # noqa: E402
    NKDTerms,
    nkd_terms,
    power_transformed_teacher,
    ttm_divergence,
    wttm_divergence,
)

__all__ += [
    "CONSISTENCY_KINDS",
    "GlobalTemperature",
    "GradientReversal",
    "InstanceTemperature",
    "NKDTerms",
    "TopKBook",
    "adaptive_smoothing_alpha",
    "compress_teacher",
    "confidence_aware_weights",
    "consistency_divergence",
    "corrected_teacher_log_probs",
    "curriculum_lambda",
    "extracted_teacher_logits",
    "extractive_teacher_log_probs",
    "gradient_reversal",
    "kd_divergence_per_sample_temperature",
    "nkd_terms",
    "power_transformed_teacher",
    "self_knowledge_smoothed_ce",
    "teacher_quality",
    "teacher_quality_weights",
    "topk_kd_divergence",
    "ttm_divergence",
    "weighted_teacher_log_probs",
    "wttm_divergence",
]
