# Dora autoscaler: reads the load figures from Redis and resizes each
# deployment between its floor (--expect) and ceiling (--max) through the
# Nomad scale API. Two instances run; one holds the Consul lock and acts,
# the other takes over when it goes away.

variable "region" {
  type    = string
  default = "global"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "regions" {
  description = "platform regions and their Nomad placement, as given to the admin"
  type        = string
  default     = "z0=global/dc1"
}

variable "dorad" {
  type    = string
  default = "/usr/local/bin/dorad"
}

job "dora-autoscaler" {
  region      = var.region
  datacenters = var.datacenters
  type        = "service"

  meta {
    platform = "dora"
    role     = "autoscaler"
  }

  group "autoscaler" {
    count = 2 # high availability: leader elected through a Consul lock

    # Keep the two instances on different nodes.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # /healthz (which says whether this one leads) and /metrics.
    network {
      port "http" {}
    }

    service {
      name     = "dora-autoscaler"
      provider = "consul"
      port     = "http"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "autoscaler" {
      driver = "raw_exec"

      config {
        command = var.dorad
        args = [
          "autoscaler",
          "--listen", "${NOMAD_ADDR_http}",
          "--store", "consul://127.0.0.1:8500/dora",
          "--runtime", "nomad://127.0.0.1:4646",
          "--load", "redis://127.0.0.1:6379/0",
          "--regions", var.regions,
        ]
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
