from metagrad.cli import main
from metagrad.execution.distributed import exit_process

exit_process(main())
