"""The baseline the service benchmark compares against: the obvious FastAPI server.

Same checkpoint (PyTorch fp32 forward of the same student), same window formatter and tokenizer,
same Redis for the window, same request and response shape for ``POST /v1/dialogues/{id}/turns``.
What it lacks is everything the service adds: one request at a time (the forward runs on the event
loop, so requests queue in front of it), no batching, no ONNX Runtime, no admission control.

    python -m benchmarks.naive_server --checkpoint CKPT --redis-url redis://127.0.0.1:6379/0 --port 8090
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import redis.asyncio as aioredis
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from trainer.checkpoint import load_checkpoint
from turnwise.scoring import decode
from turnwise.window import encode_windows


class TurnIn(BaseModel):
    seq: int
    speaker: str
    text: str


def create_app(checkpoint: Path, redis_url: str, threads: int | None) -> FastAPI:
    if threads:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    model, tokenizer, window, schema = ckpt.model.eval(), ckpt.tokenizer, ckpt.window, ckpt.schema
    store = aioredis.Redis.from_url(redis_url, decode_responses=True)
    app = FastAPI(title="naive baseline")

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        await store.ping()
        return {"status": "ready"}

    @app.post("/v1/dialogues/{dialogue_id}/turns")
    async def turn(dialogue_id: str, body: TurnIn) -> dict:
        key = f"naive:{{{dialogue_id}}}:turns"
        async with store.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps({"seq": body.seq, "speaker": body.speaker, "text": body.text}))
            pipe.ltrim(key, -window.max_turns, -1)
            pipe.expire(key, 7200)
            pipe.lrange(key, 0, -1)
            *_, raw = await pipe.execute()
        turns = [json.loads(x) for x in raw]
        ids = encode_windows([turns], tokenizer, window)[0]
        with torch.inference_mode():
            input_ids = torch.tensor([ids])
            logits = model.logits_dict(input_ids, torch.ones_like(input_ids))
        row = decode(schema, {k: v.float().numpy() for k, v in logits.items()})[0]
        return {"dialogue_id": dialogue_id, "seq": body.seq, **row, "window_turns": len(turns)}

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    app = create_app(args.checkpoint, args.redis_url, args.threads)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
