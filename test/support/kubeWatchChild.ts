// A child process for test/discovery/kubernetes-alone.test.ts: a process whose only work is one
// Kubernetes watch (src/discovery/kubernetesWatch.ts), as a library user or a small command would
// run it, against the API server at 127.0.0.1:PORT (argv). It prints a JSON line for each failure
// the watch reports, and stops the watch on SIGTERM; nothing else holds the process.
import { KubeConfig } from "@kubernetes/client-node"
import { watchKubernetes } from "../../src/discovery/kubernetesWatch.ts"

const kubeConfig = new KubeConfig()
kubeConfig.loadFromOptions({
  clusters: [{ name: "fake", server: `http://127.0.0.1:${process.argv[2]}`, skipTLSVerify: true }],
  users: [{ name: "mesh", token: "test-token" }],
  contexts: [{ name: "fake", cluster: "fake", user: "mesh", namespace: "shop" }],
  currentContext: "fake"
})
const stop = watchKubernetes({
  kubeConfig,
  path: "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
  namespace: "shop",
  retryMs: 100,
  onChange: () => {},
  onFailed: (_error, failures, retryInMs) => process.stdout.write(`${JSON.stringify({ event: "failed", failures, retryInMs })}\n`)
})
process.once("SIGTERM", stop)
