from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.seeding import task_generator
from metagrad.tasks.sinusoid import SinusoidTasks

__all__ = ["SinusoidTasks", "TaskBatch", "task_generator"]
