"""pipelab's Hydra sweeper (hydra/sweeper=pipelab, the default in conf/config.yaml): see pipelab_sweeper.py."""
