"""`judge serve --constitution POLICY`: the moderation HTTP service (judge/serve/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from judge.commands.app import app
from judge.commands.model_options import (
    ApiKeyOption,
    BackendOption,
    LocatorOption,
    ModelOption,
    RelevanceOption,
    ServersOption,
    server_arg,
)


@app.command("serve")
def serve(
    constitution: Annotated[
        Path, typer.Option("--constitution", "-c", help="The policy (YAML) or its lock.")
    ],
    model: ModelOption = None,
    backend: BackendOption = None,
    server: ServersOption = None,
    api_key: ApiKeyOption = None,
    relevance: RelevanceOption = None,
    locator: LocatorOption = None,
    thresholds: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of threshold overrides.")
    ] = None,
    allow_unreviewed: Annotated[
        bool, typer.Option("--allow-unreviewed", help="Serve a lock whose rules need review.")
    ] = False,
    no_relevance: Annotated[bool, typer.Option("--no-relevance", help="Judge every rule.")] = False,
    no_center: Annotated[
        bool, typer.Option("--no-center", help="Skip the central-region check.")
    ] = False,
    no_cascade: Annotated[
        bool, typer.Option("--no-cascade", help="Skip the reasoning stage.")
    ] = False,
    fill: Annotated[str, typer.Option(help="Central-region fill: mean, blur or black.")] = "mean",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    tokens_file: Annotated[
        Path | None,
        typer.Option(help="Bearer tokens, one per line: TOKEN, NAME:TOKEN or "
                     "NAME:TOKEN:admin (role user unless admin; only admin may reload the "
                     "policy). Default: JUDGE_SERVE_TOKENS, comma-separated."),
    ] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth",
                           help="Serve without tokens on a non-loopback address.")
    ] = False,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Largest request body.")] = (
        32 * 1024 * 1024
    ),
    max_image_bytes: Annotated[int, typer.Option(min=64, help="Largest image file.")] = (
        16 * 1024 * 1024
    ),
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Largest width x height of any frame, read from the "
                          "file's structure before decoding.")
    ] = 40_000_000,
    max_images: Annotated[int, typer.Option(min=1, help="Most images in one request.")] = 16,
    max_concurrent: Annotated[
        int, typer.Option(min=1, help="Requests judged at once.")
    ] = 8,
    max_queue: Annotated[
        int, typer.Option(min=0, help="Requests waiting; one more gets 429.")
    ] = 64,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds per image before its rules are undecided.")
    ] = 120.0,
    max_video_bytes: Annotated[
        int, typer.Option(min=64, help="Largest video clip (/v1/judge; the body limit holds "
                          "too).")
    ] = 32 * 1024 * 1024,
    max_video_seconds: Annotated[
        float, typer.Option(min=0.1, help="Longest video clip, read before decoding.")
    ] = 300.0,
    max_video_pixels: Annotated[
        int, typer.Option(min=1, help="Largest width x height of a clip's frames.")
    ] = 3840 * 2160,
    video_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds per clip before its rules are undecided.")
    ] = 600.0,
    allow_remote_host: Annotated[
        list[str] | None,
        typer.Option(help="Fetch http(s) image URLs from this host (repeat; '*.example.com' "
                     "for subdomains). Off by default."),
    ] = None,
    remote_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per fetch.")] = 5.0,
    remote_max_bytes: Annotated[int, typer.Option(min=64, help="Largest fetched image.")] = (
        16 * 1024 * 1024
    ),
    allow_remote_port: Annotated[
        list[int] | None,
        typer.Option(min=1, max=65535, help="A port remote image URLs may name (repeat; "
                     "default 80 and 443)."),
    ] = None,
    allow_private_remote: Annotated[
        bool, typer.Option("--allow-private-remote",
                           help="Fetch remote images from loopback, private, link-local and "
                           "other non-public addresses (refused by default).")
    ] = False,
    public_metrics: Annotated[
        bool, typer.Option("--public-metrics", help="Serve /metrics without a token.")
    ] = False,
    fail_open: Annotated[
        bool, typer.Option("--fail-open", help="Do not flag images whose rules are undecided "
                           "(the default flags them: fail closed).")
    ] = False,
    store: Annotated[
        Path | None, typer.Option(help="SQLite store (default: <cache>/judge.sqlite3).")
    ] = None,
    log_images: Annotated[
        bool, typer.Option("--log-images", help="Keep image bytes in the decision log.")
    ] = False,
    keep_alive: Annotated[
        int, typer.Option(min=1, help="Seconds an idle client connection stays open.")
    ] = 75,
    model_name: Annotated[
        str, typer.Option(help="The model name /v1/moderations reports.")
    ] = "judge-clue",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a constitution over HTTP: OpenAI-shaped /v1/moderations, /v1/judge, metrics."""
    from judge.serve import Limits, ModelOptions, RemoteImages, ServeConfig, load_tokens
    from judge.serve.run import build_service, check_exposure
    from judge.serve.run import serve as run_server

    config = ServeConfig(
        constitution=constitution,
        tokens=load_tokens(tokens_file),
        tokens_file=tokens_file,
        limits=Limits(
            max_body_bytes=max_body_bytes,
            max_image_bytes=max_image_bytes,
            max_pixels=max_pixels,
            max_images=max_images,
            max_concurrent=max_concurrent,
            max_queue=max_queue,
            request_timeout_s=timeout,
            max_video_bytes=max_video_bytes,
            max_video_seconds=max_video_seconds,
            max_video_pixels=max_video_pixels,
            video_timeout_s=video_timeout,
        ),
        remote=RemoteImages(
            allow_hosts=tuple(allow_remote_host or ()),
            timeout_s=remote_timeout,
            max_bytes=remote_max_bytes,
            allow_ports=tuple(allow_remote_port or (80, 443)),
            allow_private=allow_private_remote,
        ),
        public_metrics=public_metrics,
        fail_closed=not fail_open,
        store=store,
        log_images=log_images,
        model_name=model_name,
        keep_alive_s=keep_alive,
    )
    options = ModelOptions(
        model=model, backend=backend, server=server_arg(server), api_key=api_key,
        relevance=relevance,
        locator=locator, thresholds=thresholds, allow_unreviewed=allow_unreviewed,
        no_relevance=no_relevance, no_center=no_center, no_cascade=no_cascade, fill=fill,
    )
    check_exposure(config, host, insecure_no_auth)  # before any model loads
    service = build_service(config, options)
    started = run_server(service, host, port, log_level=log_level,
                         allow_no_auth=insecure_no_auth)
    if not started:
        raise typer.Exit(3)
