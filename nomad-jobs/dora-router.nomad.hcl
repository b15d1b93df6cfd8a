# Dora router: the data plane, one instance on every client node of the
# region's datacenters (a system job). Submit once per Nomad region:
#
#   nomad job run -region global -var dora_region=z0 dora-router.nomad.hcl
#
# It serves bucket domains on port 8080 of each node (put a load balancer or
# DNS round robin in front), finds ufop instances through Consul (passing
# checks of the ufop-<name> services) and records load figures in Redis.
# dorad is expected at /usr/local/bin/dorad on the clients (see
# docs/production.md); the backends are the local Consul and Nomad agents.

variable "region" {
  description = "Nomad region the job runs in"
  type        = string
  default     = "global"
}

variable "datacenters" {
  description = "Nomad datacenters of that region"
  type        = list(string)
  default     = ["*"]
}

variable "dora_region" {
  description = "Dora platform region these routers serve (z0, z1, ...)"
  type        = string
  default     = "z0"
}

variable "domain_suffix" {
  description = "buckets answer at <bucket>.<domain_suffix>"
  type        = string
  default     = "localhost"
}

variable "objects" {
  description = "object origin shared by every admin, router and worker: s3://<bucket>[/<prefix>]?endpoint=... (credentials from the AWS chain on the client: instance role or /root/.aws); file:// only if the directory is the same shared one (NFS, CSI volume) on every node"
  type        = string
  default     = "file:///var/lib/dora/objects"
}

variable "dorad" {
  description = "path of the dorad binary on the client nodes"
  type        = string
  default     = "/usr/local/bin/dorad"
}

job "dora-router" {
  region      = var.region
  datacenters = var.datacenters
  type        = "system"

  meta {
    platform = "dora"
    role     = "router"
  }

  group "router" {
    network {
      port "http" {
        static = 8080
      }
    }

    service {
      name     = "dora-router"
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

    update {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "10s"
      healthy_deadline = "2m"
    }

    task "router" {
      driver = "raw_exec"

      config {
        command = var.dorad
        args = [
          "router",
          "--addr", "0.0.0.0:${NOMAD_PORT_http}",
          "--public-addr", "${NOMAD_ADDR_http}",
          "--region", var.dora_region,
          "--domain-suffix", var.domain_suffix,
          "--store", "consul://127.0.0.1:8500/dora",
          "--discovery", "consul://127.0.0.1:8500",
          "--load", "redis://127.0.0.1:6379/0",
          "--objects", var.objects,
        ]
      }

      resources {
        cpu    = 1000
        memory = 512
      }

      kill_signal  = "SIGTERM"
      kill_timeout = "30s" # lets in-flight pipelines finish
    }
  }
}
