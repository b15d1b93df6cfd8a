# Dora worker: runs persistent processing (pfop) jobs from the Redis
# Streams queue the admin puts them on, through the ufop instances Consul
# reports, and writes their results to the shared object directory.
# Workers scale horizontally (raise count); a crashed worker's jobs are
# taken over by the others after --reclaim-after. Per-pipeline limits
# (--limits) are counted across every worker: give all the same.
#
#   nomad job run -var dora_region=z0 dora-worker.nomad.hcl
#
# Each worker embeds a router engine: instances read a job's input from its
# one-shot URLs at --public-addr, so that address must be reachable from
# every client node.

variable "region" {
  description = "Nomad region the job runs in"
  type        = string
  default     = "global"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "dora_region" {
  description = "Dora platform region whose instances run the jobs' steps"
  type        = string
  default     = "z0"
}

variable "objects" {
  description = "object origin shared by every admin, router and worker: s3://<bucket>[/<prefix>]?endpoint=... (credentials from the AWS chain on the client: instance role or /root/.aws); file:// only if the directory is the same shared one (NFS, CSI volume) on every node"
  type        = string
  default     = "file:///var/lib/dora/objects"
}

variable "limits" {
  description = "per-pipeline concurrency limits across all workers: name=n[,name=n...]"
  type        = string
  default     = ""
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

    network {
      port "http" {}
    }

    service {
      name     = "dora-worker"
      provider = "consul"
      port     = "http"
      tags     = ["region=${var.dora_region}"]

      check {
        type     = "http"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "worker" {
      driver = "raw_exec"

      config {
        command = var.dorad
        args = [
          "worker",
          "--listen", "${NOMAD_ADDR_http}",
          "--public-addr", "${NOMAD_ADDR_http}",
          "--region", var.dora_region,
          "--store", "consul://127.0.0.1:8500/dora",
          "--queue", "redis://127.0.0.1:6379/0",
          "--discovery", "consul://127.0.0.1:8500",
          "--objects", var.objects,
          "--limits", var.limits,
          "--grace", "25s",
        ]
      }

      resources {
        cpu    = 500
        memory = 256
      }

      kill_signal  = "SIGTERM"
      kill_timeout = "30s" # --grace lets running jobs finish, the rest are handed back
    }
  }
}
