"""Alignment and drizzling of calibrated ACS/WFC exposures (stage entry: run_drizzle)."""

from hstred.drizzle.config import DrizzleConfig
from hstred.drizzle.plan import CalibratedExposure, DrizzlePlan, VisitGroup, build_plan
from hstred.drizzle.result import (
    AlignmentSolution,
    DrizzleProduct,
    DrizzleResult,
    GridInfo,
    SingleProduct,
)
from hstred.drizzle.stage import plan_drizzle, run_drizzle
from hstred.naming import product_paths

__all__ = [
    "AlignmentSolution",
    "CalibratedExposure",
    "DrizzleConfig",
    "DrizzlePlan",
    "DrizzleProduct",
    "DrizzleResult",
    "GridInfo",
    "SingleProduct",
    "VisitGroup",
    "build_plan",
    "plan_drizzle",
    "product_paths",
    "run_drizzle",
]
