from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.sampler import EpisodeSampler
from metagrad.tasks.seeding import task_generator
from metagrad.tasks.sinusoid import SinusoidTasks

__all__ = ["EpisodeSampler", "SinusoidTasks", "TaskBatch", "task_generator"]
