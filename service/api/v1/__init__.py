"""API version 1."""

from fastapi import APIRouter

from service.api.v1 import exports, jobs

router = APIRouter()
router.include_router(jobs.router)
router.include_router(exports.router)
