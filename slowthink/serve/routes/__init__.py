"""The server's endpoints, one ``APIRouter`` per resource; each reads the shared ``state.Server`` from
``request.app.state.server``."""

from .chat import router as chat
from .feedback import router as feedback
from .jobs import execute_job
from .jobs import router as jobs
from .models import router as models

ROUTERS = (models, chat, jobs, feedback)

__all__ = ["ROUTERS", "execute_job"]
