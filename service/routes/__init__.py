"""HTTP and WebSocket routes, one APIRouter per resource; handlers stay thin."""
