# Dora admin API (the control plane): accounts, buckets, ufops, builds,
# releases, deployments; pfop/prefop and the form upload on the same port,
# jobs queued on Redis for dora-worker. It renders the ufop jobs (ufop.nomad.hcl.tmpl) and
# registers them with Nomad, and serves build artifacts to the clients over
# signed, expiring URLs (so its public URL must be reachable from every
# client).
#
#   nomad var put nomad/jobs/dora-admin root_ak=... root_sk=...
#   nomad job run dora-admin.nomad.hcl
#
# Builds and uploaded objects live in a host volume ("dora-data"), so pin
# the job to the node that has it (or use a CSI volume).

variable "region" {
  type    = string
  default = "global"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "public_url" {
  description = "URL the Nomad clients use to fetch artifacts from the admin API"
  type        = string
  default     = "http://dora-admin.service.consul:8090"
}

variable "domain_suffix" {
  description = "the routers' domain suffix: no bucket may bind a domain under it"
  type        = string
  default     = "localhost"
}

variable "objects" {
  description = "object origin shared by every admin, router and worker: s3://<bucket>[/<prefix>]?endpoint=... (credentials from the AWS chain on the client: instance role or /root/.aws); file:// only if the directory is the same shared one (NFS, CSI volume) on every node"
  type        = string
  default     = "file:///var/lib/dora/objects"
}

variable "regions" {
  description = "platform regions and their Nomad placement, the first is the default"
  type        = string
  default     = "z0=global/dc1"
}

variable "dorad" {
  type    = string
  default = "/usr/local/bin/dorad"
}

job "dora-admin" {
  region      = var.region
  datacenters = var.datacenters
  type        = "service"

  meta {
    platform = "dora"
    role     = "admin"
  }

  group "admin" {
    count = 1 # the builder and object store are local to its data volume

    volume "data" {
      type      = "host"
      source    = "dora-data"
      read_only = false
    }

    network {
      port "http" {
        static = 8090
      }
    }

    service {
      name     = "dora-admin"
      provider = "consul"
      port     = "http"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "admin" {
      driver = "raw_exec"

      volume_mount {
        volume      = "data"
        destination = "/var/lib/dora"
      }

      # Root keys from Nomad Variables, never written in the job file.
      template {
        destination = "secrets/root.env"
        env         = true
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/dora-admin" }}
        DORA_ROOT_AK={{ .root_ak }}
        DORA_ROOT_SK={{ .root_sk }}
        {{ end }}
        EOT
      }

      config {
        command = var.dorad
        args = [
          "admin",
          "--addr", "0.0.0.0:${NOMAD_PORT_http}",
          "--public-url", var.public_url,
          "--data-dir", "/var/lib/dora",
          "--store", "consul://127.0.0.1:8500/dora",
          "--runtime", "nomad://127.0.0.1:4646",
          "--objects", var.objects,
          "--queue", "redis://127.0.0.1:6379/0",
          "--regions", var.regions,
          "--domain-suffix", var.domain_suffix,
        ]
      }

      resources {
        cpu    = 1000
        memory = 1024
      }
    }
  }
}
