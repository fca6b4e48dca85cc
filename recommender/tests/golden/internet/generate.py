# Regenerates cluster.yaml and flows.jsonl of this case (python3 with PyYAML): python3 generate.py
# A dual-stack cluster; a crawler that reaches 40 external addresses (more than max_external_peers,
# so it gets internet egress with the pod and Service ranges excepted, derived from the Nodes'
# podCIDRs and the Services' clusterIPs); a Deployment and a StatefulSet sharing the name "api";
# a workload whose name is too long for "<name>-egress" in 63 characters.
import json, yaml
docs = []
n = [0]
def uid():
    n[0] += 1
    return "00000000-0000-4000-9000-%012d" % n[0]
for name in ["kube-system", "default", "web"]:
    docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
docs.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
             "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"]},
             "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}, {"type": "InternalIP", "address": "fc00:f853:ccd:e793::2"}]}})
def svc(ns, name, ips, sel, ports):
    s = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
         "spec": {"clusterIP": ips[0], "clusterIPs": ips, "ipFamilies": ["IPv6" if ":" in i else "IPv4" for i in ips], "ports": ports}}
    if sel: s["spec"]["selector"] = sel
    docs.append(s)
def eps(ns, svcname, family, ports, endpoints):
    docs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": family,
                 "metadata": {"name": f"{svcname}-{family.lower()}", "namespace": ns, "labels": {"kubernetes.io/service-name": svcname}},
                 "ports": ports, "endpoints": endpoints})
svc("default", "kubernetes", ["10.96.0.1"], None, [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}])
eps("default", "kubernetes", "IPv4", [{"name": "https", "port": 6443, "protocol": "TCP"}], [{"addresses": ["172.18.0.2"]}])
def deploy(ns, name, sel, hashv, pods, ports=None, kind="Deployment"):
    du = uid()
    c = {"name": name.split("-")[0], "image": "registry.example.test/app:1"}
    if ports: c["ports"] = ports
    tmpl = {"metadata": {"labels": sel}, "spec": {"containers": [c]}}
    if kind == "Deployment":
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns, "uid": du},
                     "spec": {"replicas": len(pods), "selector": {"matchLabels": sel}, "template": tmpl}})
        ru = uid(); rsl = dict(sel, **{"pod-template-hash": hashv})
        docs.append({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": f"{name}-{hashv}", "namespace": ns, "uid": ru, "labels": rsl,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": du, "controller": True}]},
                     "spec": {"selector": {"matchLabels": rsl}, "template": {"metadata": {"labels": rsl}, "spec": {"containers": [c]}}}})
        owner = ("ReplicaSet", f"{name}-{hashv}", ru); labels = rsl
    else:
        docs.append({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": ns, "uid": du},
                     "spec": {"serviceName": name, "selector": {"matchLabels": sel}, "template": tmpl}})
        owner = ("StatefulSet", name, du); labels = dict(sel, **{"controller-revision-hash": f"{name}-7d9f8b6c5d"})
    out = []
    for pname, ips in pods:
        p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pname, "namespace": ns, "uid": uid(), "labels": dict(labels),
             "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": owner[2], "controller": True}]},
             "spec": {"nodeName": "node-a", "containers": [c]},
             "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": i} for i in ips], "hostIP": "172.18.0.2"}}
        if kind == "StatefulSet": p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = pname
        docs.append(p); out.append(p)
    return out
dns = deploy("kube-system", "coredns", {"k8s-app": "kube-dns"}, "66bc5c9577", [("coredns-66bc5c9577-7xk2p", ["10.244.0.2", "fd00:10:244::2"])],
             [{"name": "dns", "containerPort": 53, "protocol": "UDP"}, {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}])
svc("kube-system", "kube-dns", ["10.96.0.10", "fd00:10:96::a"], {"k8s-app": "kube-dns"},
    [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}, {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}])
for fam, ip in [("IPv4", "10.244.0.2"), ("IPv6", "fd00:10:244::2")]:
    eps("kube-system", "kube-dns", fam, [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
        [{"addresses": [ip], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": dns[0]["metadata"]["name"]}}])
crawler = deploy("web", "crawler", {"app": "crawler"}, "8b7c6d5f4", [("crawler-8b7c6d5f4-q2w3e", ["10.244.0.20", "fd00:10:244::20"])])
api_d = deploy("web", "api", {"app": "api", "kind": "stateless"}, "5f6d7c8b9", [("api-5f6d7c8b9-r4t5y", ["10.244.0.30", "fd00:10:244::30"])],
               [{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
api_s = deploy("web", "api", {"app": "api", "kind": "stateful"}, "", [("api-0", ["10.244.0.31", "fd00:10:244::31"])],
               [{"name": "grpc", "containerPort": 9090, "protocol": "TCP"}], kind="StatefulSet")
svc("web", "api", ["10.96.20.1", "fd00:10:96::20:1"], {"app": "api", "kind": "stateful"}, [{"name": "grpc", "port": 9090, "protocol": "TCP", "targetPort": "grpc"}])
eps("web", "api", "IPv4", [{"name": "grpc", "port": 9090, "protocol": "TCP"}], [{"addresses": ["10.244.0.31"], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "namespace": "web", "name": "api-0"}}])
longname = "customer-notification-dispatcher-with-a-really-long-descriptive-name"
longp = deploy("web", longname, {"app": "notifier"}, "7d8c9b6a5", [(f"{longname}-7d8c9b6a5-a1b2c", ["10.244.0.40", "fd00:10:244::40"])])
with open("cluster.yaml", "w") as f:
    f.write("# Dual-stack cluster: internet egress for a crawler, two kinds named \"api\", a very long workload name.\n")
    yaml.safe_dump_all(docs, f, sort_keys=False)
flows = []
def rec(p, ip, port, proto, outcome, names=None):
    o = p["metadata"]["ownerReferences"][0]
    w = {"kind": "Deployment", "name": o["name"].rsplit("-", 1)[0]} if o["kind"] == "ReplicaSet" else {"kind": o["kind"], "name": o["name"]}
    d = {"ip": ip, "port": port, "protocol": proto}
    if names: d["dns_names"] = names
    flows.append({"node": "node-a", "source": {"kind": "pod", "namespace": p["metadata"]["namespace"], "pod": p["metadata"]["name"],
                  "uid": p["metadata"]["uid"], "workload": w, "labels": p["metadata"]["labels"]},
                  "destination": d, "first_seen": "2026-11-26T15:00:00Z", "last_seen": "2026-11-26T16:30:00Z", "count": 7, "outcome": outcome})
c = crawler[0]
rec(c, "10.96.0.10", 53, "UDP", "sent")
rec(c, "fd00:10:96::a", 53, "UDP", "sent")
for i in range(30):
    rec(c, f"198.18.{i // 8}.{(i * 37) % 250 + 1}", 443, "TCP", "established", [f"site{i}.example.test"])
for i in range(10):
    rec(c, f"2001:db8:{i}::80", 443 if i % 2 else 80, "TCP", "established" if i != 3 else "timeout")
rec(api_d[0], "10.96.20.1", 9090, "TCP", "established")            # Deployment api -> StatefulSet api via Service (named targetPort)
rec(api_d[0], "fd00:10:96::a", 53, "UDP", "sent")
rec(api_s[0], "10.96.0.1", 443, "TCP", "established")             # apiserver
rec(longp[0], "10.244.0.30", 8080, "TCP", "established")         # straight to the api Deployment's pod IP
rec(longp[0], "198.18.50.1", 587, "TCP", "established", ["smtp.example.test"])
rec(longp[0], "10.96.0.10", 53, "UDP", "sent")
with open("flows.jsonl", "w") as f:
    for r in flows: f.write(json.dumps(r, separators=(",", ":")) + "\n")
