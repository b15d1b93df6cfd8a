# Dora worker: runs persistent processing (pfop) jobs from the Redis
# Streams queue and writes their results. Workers scale horizontally; a
# crashed worker's claimed jobs are reclaimed by the others.

variable "region" {
  type    = string
  default = "global"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "dorad" {
  type    = string
  default = "/usr/local/bin/dorad"
}

job "dora-worker" {
  region      = var.region
  datacenters = var.datacenters
  type        = "service"

  meta {
    platform = "dora"
    role     = "worker"
  }

  group "worker" {
    count = 2

    task "worker" {
      driver = "raw_exec"

      config {
        command = var.dorad
        args = [
          "worker",
          "--store", "consul://127.0.0.1:8500/dora",
          "--runtime", "nomad://127.0.0.1:4646",
          "--discovery", "consul://127.0.0.1:8500",
          "--load", "redis://127.0.0.1:6379/0",
        ]
      }

      resources {
        cpu    = 500
        memory = 256
      }

      kill_signal  = "SIGTERM"
      kill_timeout = "30s" # finish or release the job in hand
    }
  }
}
