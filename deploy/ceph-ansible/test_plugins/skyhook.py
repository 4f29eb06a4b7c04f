"""Jinja test for skyhook.yml: every OSD's up_from after a restart is newer than before."""


def skyhook_all_newer(after, before):
    return len(after) == len(before) and all(int(a) > int(b) for a, b in zip(after, before))


class TestModule:
    def tests(self):
        return {"skyhook_all_newer": skyhook_all_newer}
