"""Settings of each stage as frozen dataclasses; the CLI flags are generated from their fields.

Keeping the settings here means a stage's function signature, its CLI, its defaults and its
checks cannot drift apart: every number declares the range it accepts (options.py turns the
fields into flags and checks the ranges when settings are made).
"""

from __future__ import annotations

from dataclasses import dataclass

from artdate import USER_AGENT
from artdate.core.exports import parse_columns
from artdate.core.options import Range, Settings, option

COMPILE_HELP = (
    "run the model through torch.compile: 1.40x training and 1.48x scoring measured on an H200 at batch 256, "
    "after about 2 minutes of compiling (training; half a minute scoring) at the start of each worker"
)
DECODE_ON_HELP = (
    "where JPEGs are decoded and transformed: cpu (loader processes) or device (on the GPU with nvJPEG, "
    "for nodes whose CPUs cannot keep up)"
)


@dataclass(frozen=True)
class PackConfig(Settings):
    metadata: tuple[str, ...] = option(
        help="metadata CSV file(s): at least id (,year); optional museum, year_start, year_end, date (as text), "
        "file, url; or the Met's MetObjects.csv as published; or any export with --columns",
        nargs="+",
    )
    out: str = option(help="store URL: a local directory or s3://bucket/prefix", storage=True)
    images: str = option(
        "", help="image folder (local or s3://) for the CSV's file column, or a pattern like DIR/{id}.jpg"
    )
    source: str = option(
        "",
        help="fetch images from the museums: auto (met works from the Met, rijks works from the Rijksmuseum, "
        "others from their file or url column), met or rijks",
        choices=["", "auto", "met", "rijks"],
    )
    api_url: tuple[str, ...] = option(
        (),
        help="MUSEUM=URL: replace a museum's public API root (repeatable), e.g. met=http://127.0.0.1:9000/met",
        action="append",
    )
    originals: str = option(
        "",
        help="directory or s3:// URL that keeps every downloaded image under its museum and id; "
        "a later pack takes them from there and asks the museums only for what is missing",
        storage=True,
    )
    exclude_types: tuple[str, ...] = option(
        (),
        help="leave out works whose object type (Met classification, objectName "
        "or department; Rijksmuseum type of work) is one of these names, any case, "
        "singular or plural (e.g. photographs)",
        nargs="+",
    )
    user_agent: str = option(USER_AGENT, help="User-Agent of every request to a museum or image server")
    museum: str = option("", help="museum of every row, for CSVs without a museum column")
    columns: tuple[str, ...] = option(
        (),
        help="NAME=COLUMN...: read artdate's column NAME (id, year, year_start, year_end, date, museum, file, url, "
        "title, artist, type) from the file's COLUMN, e.g. id=\"Accession No\" date=Date (the Met's "
        "MetObjects.csv needs none: its header is known)",
        nargs="+",
    )
    coarse_dates: str = option(
        "",
        help="CSV with an id (and optional museum) column of works whose single year is "
        "coarse, e.g. ../shared/public-art/date-flags.csv: they train as the span it stands "
        "for (a year ending in 01 its century, another ending in 0 its decade)",
    )
    size: int = option(
        256,
        range=Range(at_least=1),
        help="shorter side of the stored images in pixels (never upscaled); 256 feeds training and scoring at 224 px",
    )
    quality: int = option(90, range=Range(at_least=1, at_most=100), help="JPEG quality of the stored images")
    samples_per_shard: int = option(
        1000, range=Range(at_least=1), help="samples per shard (the last shard of a split may hold fewer)"
    )
    val_fraction: float = option(
        0.1, range=Range(at_least=0, below=1), help="fraction of works in the validation split"
    )
    seed: int = option(0, range=Range(at_least=0), help="seed of the train/val split and the shard shuffle")
    year_min: int = option(1200, range=Range(), help="drop works made before this year")
    year_max: int = option(1930, range=Range(), help="drop works made after this year")
    skip_bad_rows: bool = option(False, help="skip and list bad metadata rows instead of stopping")
    max_pixels: int = option(
        100_000_000, range=Range(at_least=1), help="reject images with more pixels than this (decompression bombs)"
    )
    max_bytes: int = option(50_000_000, range=Range(at_least=1), help="reject downloads larger than this many bytes")
    jobs: int = option(0, range=Range(at_least=0), help="processes that decode and resize images (0: one per core)")
    concurrency: int = option(8, range=Range(at_least=1), help="downloads in flight at once (museum APIs)")
    rate: float = option(
        2.0, range=Range(above=0), help="request starts per second at most to each host (museum APIs, image servers)"
    )
    timeout: float = option(30.0, range=Range(above=0), help="seconds to wait for a museum API or image server")
    retries: int = option(
        3,
        range=Range(at_least=0),
        help="retries of a download after a block (403 page, 429), 5xx, a timeout or a broken connection",
    )
    backoff: float = option(
        1.0,
        range=Range(at_least=0),
        help="seconds before the first retry of a 5xx, a timeout or a broken connection; doubles each retry",
    )
    block_pause: float = option(
        60.0,
        range=Range(at_least=0),
        help="seconds a host that blocks (a 403 block page, 429 without Retry-After) is "
        "left alone before a retry; doubles while the block lasts",
    )
    allow_link_local: bool = option(
        False, help="allow downloads from link-local and cloud metadata addresses (169.254.0.0/16)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_columns(self.columns)  # an unknown name is refused before any work
        if self.year_min > self.year_max:
            raise ValueError(f"--year-min {self.year_min} is after --year-max {self.year_max}: no year is inside")


@dataclass(frozen=True)
class TrainConfig(Settings):
    shards: str = option(help="store URL written by artdate pack (a directory or s3://...)", storage=True)
    storage: str = option(help="URL of this run's checkpoints and results (a directory or s3://...)", storage=True)
    backbone: str = option("resnet152", help="torchvision model name, or efficientnet_lite0/1/2 (offline weights)")
    weights: str = option(
        "imagenet", help="imagenet, none, or a path/URL of a state dict of the backbone", storage=True
    )
    epochs: int = option(10, range=Range(at_least=1), help="passes over the training split")
    batch_size: int = option(
        0,
        range=Range(at_least=0),
        help="images per step on each worker (with --workers MIN-MAX: at MIN workers; the global "
        "batch, batch size x MIN, stays fixed as workers come and go); 0: 32 on CPU, and on a GPU the largest "
        "power of two up to 256 at 224 px (as many pixels at other sizes) whose step, measured on the card "
        "first, fits its memory (128 on a 24 GB card for resnet152), with --lr scaled by the square root of "
        "the batch over 32",
    )
    image_size: int = option(224, range=Range(at_least=32), help="side of the square crops fed to the model")
    workers: str = option(
        "1",
        help="training workers (one DDP rank each): N, or MIN-MAX to start as soon as MIN can be placed and "
        "grow toward MAX as the cluster gains room (elastic; see docs/cluster.md)",
    )
    gpus_per_worker: float = option(
        -1.0,
        range=Range(at_least=0, also=(-1,)),
        help="GPUs per worker; -1: 1 when the cluster has GPUs or can autoscale to them, else 0",
    )
    cpus_per_worker: float = option(1.0, range=Range(at_least=0), help="CPUs reserved per worker")
    loss: str = option(
        "mse",
        help="mse (2017), l1, huber, or bins (soft year-bin classification)",
        choices=["mse", "l1", "huber", "bins"],
    )
    resume: bool = option(False, help="continue the run in --storage from its latest checkpoint")
    lr: float = option(
        1e-3, range=Range(above=0), help="peak learning rate of the head (AdamW), for a batch of 32 per worker"
    )
    backbone_lr_scale: float = option(0.1, range=Range(at_least=0), help="backbone learning rate as a fraction of --lr")
    weight_decay: float = option(0.05, range=Range(at_least=0), help="AdamW weight decay")
    warmup_epochs: float = option(1.0, range=Range(at_least=0), help="linear warm-up length before the cosine decay")
    freeze_epochs: int = option(
        0,
        range=Range(at_least=0),
        help="epochs that train the year head alone (backbone learning rate 0) before fine-tuning",
    )
    grad_clip: float = option(1.0, range=Range(at_least=0), help="clip the gradient norm to this (0: off)")
    bin_width: int = option(25, range=Range(at_least=1), help="years per bin for --loss bins")
    label_sigma: float = option(
        0.0,
        range=Range(at_least=0),
        help="--loss bins: spread each target to the neighbouring bins as a Gaussian of "
        "this many years (0: only the bins of the work's date range)",
    )
    range_level: float = option(
        0.8,
        range=Range(above=0, below=1),
        help="share of true years each calibrated year range should hold (calibrated on the validation split)",
    )
    flip_averaging: bool = option(
        False,
        help="the model reads each image as it is and mirrored and averages the two: validation, score and "
        "predict all do, so the ranges are calibrated that way (up to 4 y better on public-art, "
        "twice the inference cost)",
    )
    loader_workers: int = option(2, range=Range(at_least=0), help="DataLoader processes per training worker")
    decode_on: str = option("cpu", help=DECODE_ON_HELP, choices=["cpu", "device"])
    compile: bool = option(False, help=COMPILE_HELP)
    shuffle_buffer: int = option(500, range=Range(at_least=0), help="samples in each loader's shuffle buffer (0: none)")
    keep_checkpoints: int = option(
        3, range=Range(at_least=1), help="best checkpoints kept (by val MAE), besides the latest"
    )
    max_failures: int = option(
        10,
        range=Range(at_least=0),
        help="times the run restarts from its latest checkpoint after a worker or node is "
        "lost, before it fails (spot nodes: see README)",
    )
    max_preemptions: int = option(
        100,
        range=Range(at_least=0, also=(-1,)),
        help="times the run restarts after a node is preempted (a drain notice: spot or "
        "preemptible nodes), counted apart from --max-failures (-1: no limit)",
    )
    checkpoint_every: float = option(
        0.0,
        range=Range(at_least=0),
        help="minutes between checkpoints inside an epoch (0: only at the end of each epoch and on a "
        "preemption notice), so a node lost without notice costs at most that much",
    )
    preemption_poll_steps: int = option(
        5,
        range=Range(at_least=1),
        help="steps between checks for a preemption notice or a due --checkpoint-every (all workers check)",
    )
    resize_check: float = option(
        60.0, range=Range(above=0), help="with --workers MIN-MAX: seconds between Ray's checks for room to grow"
    )
    key_log: str = option(
        "",
        help="local folder where each worker appends the sample keys of every step (an audit of "
        "which works each epoch trained on)",
    )
    seed: int = option(0, range=Range(at_least=0), help="seed of the shard order and the head's initialisation")
    log_every: int = option(
        20,
        range=Range(at_least=0),
        help="update the progress bar every this many steps (0: only at the end of each epoch)",
    )
    start_timeout: float = option(
        900.0,
        range=Range(above=0),
        help="seconds to wait for the cluster to place --workers (the fewest of MIN-MAX) when it may grow "
        "(nodes joining, autoscaling) before giving up; a cluster that can never place them fails at once",
    )
    mlflow: str = option(
        "",
        help="MLflow tracking URI (sqlite:///mlflow.db, or a tracking server's http URL): log the settings, each "
        "epoch's metrics and the best checkpoint, one MLflow run per --storage across restarts and --resume",
    )


@dataclass(frozen=True)
class ScoreConfig(Settings):
    shards: str = option(help="store URL written by artdate pack", storage=True)
    checkpoint: str = option(help="checkpoint URL, or a training run's storage URL (its best checkpoint)", storage=True)
    out: str = option(help="results CSV to write (a path or s3://...)", storage=True)
    actors: int = option(2, range=Range(at_least=1), help="scoring actors (one GPU each when there are GPUs)")
    split: str = option(
        "all",
        help="which split(s) to score (undated: the works to date alone)",
        choices=["all", "train", "val", "undated"],
    )
    batch_size: int = option(
        0, range=Range(at_least=0), help="images per forward pass (0: 64 on CPU, 256 on a GPU, where it fills the GPU)"
    )
    gpus_per_actor: float = option(
        -1.0,
        range=Range(at_least=0, also=(-1,)),
        help="GPUs per actor; -1: 1 when the cluster has GPUs or can autoscale to them, else 0",
    )
    cpus_per_actor: float = option(1.0, range=Range(at_least=0), help="CPUs reserved per actor")
    max_retries: int = option(3, range=Range(at_least=0), help="times a shard is retried after its actor died")
    loader_workers: int = option(
        0,
        range=Range(at_least=0),
        help="processes per actor (started per shard) that decode the next images while the "
        "model runs; 0: a thread of the actor does",
    )
    decode_on: str = option("cpu", help=DECODE_ON_HELP, choices=["cpu", "device"])
    compile: bool = option(False, help=COMPILE_HELP)
    comparanda: str = option(
        "",
        help="the results CSV of a score of the training works with this checkpoint: their embeddings "
        "(kept beside it) are the dated works each work's nearest are found among, for a store of works to "
        "date alone (default: the training works of --shards this run scores, with --split all or train; "
        "--split val or undated then writes no neighbours file, and says so)",
        storage=True,
    )
    start_timeout: float = option(
        900.0,
        range=Range(above=0),
        help="seconds to wait for the first actor to be placed (autoscaling) before giving up",
    )


@dataclass(frozen=True)
class ReportConfig(Settings):
    results: str = option(help="results CSV with year and pred columns", positional=True, storage=True)
    out: str = option(help="directory for summary.json, the plots and report.html", storage=True)
    shards: str = option(
        "", help="store URL to find gallery images in (default: the results' shard column)", storage=True
    )
    gallery: int = option(8, range=Range(at_least=0), help="images in each gallery")
    run: str = option(
        "", help="a training run's --storage URL (or one of its checkpoints): draw its learning curves", storage=True
    )


@dataclass(frozen=True)
class PredictConfig(Settings):
    images: tuple[str, ...] = option(
        help="image paths, s3:// or http(s) URLs, or folders (every image in them)",
        positional=True,
        nargs="+",
        storage=True,
    )
    checkpoint: str = option(help="checkpoint URL, or a training run's storage URL", storage=True)
    out: str = option(
        "",
        help="write the predictions to this CSV, with the columns of score's results.csv (and its "
        "neighbours file beside it with --comparanda), for artdate report",
        storage=True,
    )
    timeout: float = option(30.0, range=Range(above=0), help="seconds to wait for an http(s) image")
    max_bytes: int = option(50_000_000, range=Range(at_least=1), help="largest image download accepted")
    max_pixels: int = option(100_000_000, range=Range(at_least=1), help="largest image accepted, in pixels")
    allow_link_local: bool = option(False, help="allow a download from a link-local or cloud metadata address")
    comparanda: str = option(
        "",
        help="a results CSV that score wrote with this checkpoint: also list the training works "
        "nearest to each image, with their years",
        storage=True,
    )


@dataclass(frozen=True)
class DemoConfig(Settings):
    workdir: str = option(
        "demo-run", help="directory (or s3:// URL) for the shards, the run, results and report", storage=True
    )
    data: tuple[str, ...] = option(
        (),
        help="folder(s), each with an artworks.csv (id, year, file) and the images it names, e.g. "
        "../shared/artworks-sample; several are packed and trained on together "
        "(default: a synthetic corpus the demo generates)",
        nargs="+",
        storage=True,
    )
    fetch: int = option(
        0,
        range=Range(at_least=0),
        help="take this many works of metadata/met-data.csv from the Met's open-access API instead (needs internet)",
    )
    api_url: tuple[str, ...] = option(
        (), help="with --fetch: MUSEUM=URL replaces the Met's public API root, as for pack", action="append"
    )
    # The recipe that cross-validated best on the sample among those that run in a few minutes
    # (bench/quality/recipes.py, bench/RESULTS.md).
    epochs: int = option(
        0,
        range=Range(at_least=0),
        help="training epochs (0: the measured recipe's: 8 on the synthetic corpus, 20 on fewer "
        "than 1,000 real training works, 10 on more)",
    )
    image_size: int = option(
        0,
        range=Range(at_least=32, also=(0,)),
        help="model input size (0: the measured recipe's: 192 px on 1,000 or more real training works, "
        "128 px on fewer and on the synthetic corpus)",
    )
    workers: int = option(2, range=Range(at_least=1), help="training workers")
    batch_size: int = option(
        16,
        range=Range(at_least=1),
        help="images per optimizer step, split among the workers, so the recipe "
        "bench/quality/recipes.py measured in one process is the one trained",
    )
    loss: str = option("bins", help="training loss", choices=["mse", "l1", "huber", "bins"])
    label_sigma: float = option(
        50.0,
        range=Range(at_least=0),
        help="--loss bins: Gaussian spread of each target over the neighbouring bins, in years",
    )

    @property
    def synthetic(self) -> bool:
        """Whether the demo runs on the corpus it generates (neither --data nor --fetch)."""
        return not (self.data or self.fetch)
