"""API version 1."""

from fastapi import APIRouter

from service.api.v1 import exports, jobs, results, uploads

router = APIRouter()
router.include_router(uploads.router)
router.include_router(jobs.router)
router.include_router(results.router)
router.include_router(exports.router)
